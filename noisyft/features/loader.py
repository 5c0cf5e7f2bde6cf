"""The data loader and the one eval-mode forward pass that feature extraction, evaluation and training share.

Kept apart from the feature cache so that the training loops (:mod:`noisyft.engine`, the
methods) take their loader from here and never depend on how features are cached.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from noisyft.backbones.base import Backbone
from noisyft.data.base import ImageSource, TorchImageDataset
from noisyft.data.transforms import eval_resize, normalize


def default_workers() -> int:
    """Decoding workers: all cores but one for the forward pass, at least one."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(dataset: Dataset, batch_size: int, num_workers: int | None, **kw) -> DataLoader:
    """A DataLoader that overlaps decoding (worker processes) with compute."""
    workers = default_workers() if num_workers is None else num_workers
    extra = {"persistent_workers": False, "prefetch_factor": 4} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(), **extra, **kw)


PRECISIONS = ("auto", "bf16", "fp32")


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether passes on ``device`` run under bf16 autocast: ``auto`` and ``bf16`` on CUDA; never on the CPU
    (CPU numbers stay those of float32)."""
    return torch.device(device).type == "cuda" and precision != "fp32"


@torch.inference_mode()
def forward_features(model: nn.Module, batch: torch.Tensor, device: torch.device, precision: str = "auto") -> torch.Tensor:
    """One eval-mode forward of a backbone or whole model, channels-last (faster on CPU and GPU), bf16 autocast on
    CUDA unless ``precision`` is ``fp32``."""
    x = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device, precision)):
        return model(x).float()


def source_features(backbone: Backbone, source: ImageSource, rows: np.ndarray, *, batch_size: int,
                    num_workers: Optional[int], device: torch.device, bar=None, precision: str = "auto") -> np.ndarray:
    """Eval-mode float32 features of ``source`` at ``rows``, uncached (what the feature cache stores per shard).

    The caller puts ``backbone`` in eval mode on ``device``; ``bar`` (a tqdm) advances by each batch.
    Workers decode and resize (:func:`eval_resize`, uint8: a quarter of the bytes through shared
    memory) and the main process normalises each batch at once: the same numbers as
    :func:`eval_transform` per image (tested), with less work per image where decoding bounds extraction.
    """
    pre = backbone.preprocess
    loader = make_loader(TorchImageDataset(source, eval_resize(pre), rows), batch_size, num_workers)
    norm = normalize(pre)
    out = []
    for x, _, _ in loader:
        out.append(forward_features(backbone, norm(x.to(device, non_blocking=True)), device, precision).cpu().numpy())
        if bar is not None:
            bar.update(len(x))
    return np.concatenate(out).astype(np.float32)
