"""Hugging Face transformers vision models as backbones (hub id or local directory).

ViT, ViT-MAE, ViT-MSN, ConvNeXt, ResNet and CLIP's vision tower are read with
``from_pretrained``; features are the CLS token (ViT family, after the final
layer norm) or the model's pooled output (CNNs, CLIP). Local files are tried
first; with no network a missing model fails with one line naming it.
"""
from __future__ import annotations

import hashlib
import os
import socket

import torch

from noisyft.backbones.base import Backbone
from noisyft.data.transforms import Preprocess
from noisyft.errors import UserError

_CLS_TOKEN_TYPES = {"vit", "vit_mae", "vit_msn", "deit", "dinov2", "beit"}
_FAMILY = {"vit": "vit", "deit": "vit", "dinov2": "vit", "beit": "vit", "vit_mae": "mae", "vit_msn": "msn",
           "convnext": "convnext", "convnextv2": "convnext", "clip": "clip", "clip_vision_model": "clip", "resnet": "resnet"}


class HFBackbone(Backbone):
    """A transformers model whose ``features`` is the CLS token or pooled output."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if self.family in ("vit", "mae", "msn"):
            return out.last_hidden_state[:, 0]
        pooled = out.pooler_output
        return pooled.flatten(1)


def hub_reachable(host: str = "huggingface.co") -> bool:
    """A fast check (DNS only) so that offline machines fail at once instead of retrying."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _load(id_or_path: str, pretrained: bool, allow_remote_code: bool):
    from transformers import AutoConfig, AutoModel, CLIPVisionModel

    kw = {"trust_remote_code": allow_remote_code, "local_files_only": os.path.isdir(id_or_path) or not hub_reachable()}
    try:
        config = AutoConfig.from_pretrained(id_or_path, **kw)
    except (OSError, ValueError) as e:
        where = "directory" if os.path.isdir(id_or_path) else "hub model"
        raise UserError(
            f"cannot load Hugging Face {where} {id_or_path!r}: not found locally and the hub is unreachable "
            f"(download it on a connected machine, e.g. `huggingface-cli download {id_or_path}`, and pass its local directory)"
        ) from e
    mtype = config.model_type
    extra = {"mask_ratio": 0.0} if mtype == "vit_mae" else {}
    if mtype == "clip":
        cls, config = CLIPVisionModel, config.vision_config
    else:
        cls = AutoModel
    for k, v in extra.items():
        setattr(config, k, v)
    if not pretrained:  # from_config builds the model and takes no file options (local_files_only would reach __init__)
        model = (cls._from_config(config) if cls is not AutoModel
                 else AutoModel.from_config(config, trust_remote_code=allow_remote_code))
        return model, mtype
    try:
        return cls.from_pretrained(id_or_path, config=config, **kw), mtype
    except OSError as e:
        raise UserError(f"cannot load weights of Hugging Face model {id_or_path!r}: {str(e).splitlines()[0]}") from e


def _preprocess(id_or_path: str, config) -> Preprocess:
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(id_or_path)
        size = proc.size.get("shortest_edge") or proc.size.get("height") or 224
        return Preprocess(int(size), tuple(proc.image_mean), tuple(proc.image_std), "bicubic")
    except Exception:  # no preprocessor_config.json: fall back to the config's image size
        size = getattr(config, "image_size", 224)
        return Preprocess(int(size) if isinstance(size, int) else 224)


def dir_digest(path: str) -> str:
    """Names, sizes and mtimes of a local model directory: new weights there → a new feature-cache key."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            h.update(f"{os.path.relpath(os.path.join(root, name), path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def create_hf_backbone(id_or_path: str, *, pretrained: bool = True, image_size: int | None = None,
                       allow_remote_code: bool = False) -> Backbone:
    """A transformers vision model by hub id or local directory."""
    model, mtype = _load(id_or_path, pretrained, allow_remote_code)
    family = _FAMILY.get(mtype, "vit" if mtype in _CLS_TOKEN_TYPES else "resnet")
    pre = _preprocess(id_or_path, model.config).with_size(image_size)
    tag = "pretrained" if pretrained else "random"
    where = f"{os.path.abspath(id_or_path)}@{dir_digest(id_or_path)}" if os.path.isdir(id_or_path) else id_or_path
    return HFBackbone(model, name=f"hf:{id_or_path}", weights_id=f"hf:{where}:{tag}",
                      preprocess=pre, family=family)
