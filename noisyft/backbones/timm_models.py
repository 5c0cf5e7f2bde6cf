"""Any timm model as a backbone (``timm:<name>`` or a bare timm name)."""
from __future__ import annotations

import timm
import torch

from noisyft.backbones.base import Backbone
from noisyft.data.transforms import Preprocess
from noisyft.errors import UserError


def timm_has(name: str) -> bool:
    return name in timm.list_models(pretrained=False) or name.split(".")[0] in timm.list_models()


def family_of(name: str) -> str:
    for fam in ("convnext", "clip", "mae", "msn", "vit", "deit", "efficientnet"):
        if fam in name:
            return "vit" if fam == "deit" else fam
    return "resnet"


def timm_preprocess(model: torch.nn.Module, image_size: int | None) -> Preprocess:
    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocess(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic")).with_size(image_size)


def create_timm_backbone(name: str, *, pretrained: bool = True, image_size: int | None = None, **kwargs) -> Backbone:
    """A timm model with its classifier removed (``num_classes=0`` → pooled features)."""
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UserError(f"unknown timm model {name!r}") from e
        raise
    except Exception as e:  # hub download failures come in many types
        if pretrained:
            raise UserError(
                f"cannot load pretrained weights for timm model {name!r} (offline? {type(e).__name__}): "
                f"put them in the Hugging Face cache on a connected machine, or use --backbone efficientnet_lite0"
            ) from e
        raise
    tag = "pretrained" if pretrained else "random"
    return Backbone(model, name=f"timm:{name}", weights_id=f"timm:{name}:{tag}",
                    preprocess=timm_preprocess(model, image_size), family=family_of(name))
