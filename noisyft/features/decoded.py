"""A split's eval-preprocessed images kept in memory, so repeated eval passes skip decoding.

TURN runs an eval-mode pass over every training image at each selection and over
val/test after each epoch. On a few CPU cores those passes are bound by decoding
and resizing in the loader, not by the model (at 64 px: ~240 images/s through the
loader against ~1,200/s for the forward alone). Eval preprocessing is
deterministic and PIL resizes in uint8, so the resized images are decoded once,
kept as one uint8 tensor (a quarter of float32's memory) and normalised per
batch: the same numbers as the loader's. A split over the memory budget
(``FitConfig.image_cache_mb``) is not kept, and its passes use the loader.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from noisyft.data.base import LabeledSet, TorchImageDataset
from noisyft.data.transforms import Preprocess, eval_resize
from noisyft.features.loader import make_loader


def decoded_bytes(n_images: int, pre: Preprocess) -> int:
    """Memory that ``n_images`` decoded images take at the backbone's input size."""
    return n_images * 3 * pre.size * pre.size


def decode_images(data: LabeledSet, pre: Preprocess, *, batch_size: int = 128, num_workers: int | None = None,
                  desc: str = "decode", progress: bool = True, indices: Optional[np.ndarray] = None) -> torch.Tensor:
    """Every image of ``data`` (or the contiguous ``indices`` only) resized and centre-cropped as by the eval
    transform: uint8 (N, 3, S, S), index order."""
    first = 0 if indices is None or len(indices) == 0 else int(indices[0])
    out = torch.empty((len(data) if indices is None else len(indices), 3, pre.size, pre.size), dtype=torch.uint8)
    loader = make_loader(TorchImageDataset(data, eval_resize(pre), indices), batch_size, num_workers)
    for x, _, idx in tqdm(loader, desc=desc, leave=False, disable=not progress):
        out[idx - first] = x
    return out
