"""The backbone registry and name resolution (registered → hf → timm)."""
from __future__ import annotations

import os

from noisyft.backbones.base import Backbone
from noisyft.errors import UserError
from noisyft.registry import Registry

BACKBONES: Registry = Registry("backbone")


def create_backbone(name: str, *, pretrained: bool = True, image_size: int | None = None,
                    allow_remote_code: bool = False, **kwargs) -> Backbone:
    """Build a backbone by name; ``pretrained=False`` gives random weights (tests, predict).

    ``image_size`` overrides the native input resolution (part of the cache key).
    ``allow_remote_code`` lets a Hugging Face model run its own Python code (``trust_remote_code``);
    only a caller's explicit grant sets it (the one place it is handed to a backbone family).
    """
    if allow_remote_code:
        kwargs["allow_remote_code"] = True
    if name in BACKBONES:
        return BACKBONES.get(name)(pretrained=pretrained, image_size=image_size, **kwargs)
    if name.startswith("hf:") or "/" in name or os.path.isdir(name):
        from noisyft.backbones.hf import create_hf_backbone

        return create_hf_backbone(name.removeprefix("hf:"), pretrained=pretrained, image_size=image_size, **kwargs)
    from noisyft.backbones.timm_models import create_timm_backbone, timm_has

    timm_name = name.removeprefix("timm:")
    if name.startswith("timm:") or timm_has(timm_name):
        return create_timm_backbone(timm_name, pretrained=pretrained, image_size=image_size, **kwargs)
    BACKBONES.get(name)  # raises with suggestions
    raise UserError(f"unknown backbone {name!r}")


def list_backbones() -> list[str]:
    return BACKBONES.names()
