"""Frozen-backbone features, computed once and cached on disk.

A cache entry is keyed by everything that changes the numbers: the backbone and
its weights, the images' content fingerprint and order, the preprocessing and
resolution, and this module's format version. Features are written in shards
(each renamed into place when complete) so a killed extraction resumes where it
stopped; the final ``features.npy`` appears by an atomic rename, is memory-mapped
on read, and is the only thing ever trusted as a finished entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from noisyft.atomic import atomic_path, write_json
from noisyft.backbones.base import Backbone
from noisyft.data.base import ImageSource
from noisyft.data.transforms import eval_transform
from noisyft.faults import maybe_die

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$NOISYFT_CACHE`` or ``~/.cache/noisyft``."""
    return Path(os.environ.get("NOISYFT_CACHE", Path.home() / ".cache" / "noisyft"))


def feature_key(backbone: Backbone, source: ImageSource) -> str:
    """The cache key: backbone + weights, image content, preprocessing, format."""
    parts = {"backbone": backbone.name, "weights": backbone.weights_id, "images": source.fingerprint(),
             "n": len(source), "preprocess": backbone.preprocess.to_dict(), "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class _Images(Dataset):
    """Eval-preprocessed images of ``source`` at ``indices`` (for the extraction loader)."""

    def __init__(self, source: ImageSource, transform, indices: np.ndarray):
        self.source, self.transform, self.indices = source, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.transform(self.source.load(int(self.indices[k])))


def default_workers() -> int:
    """Decoding workers: all cores but one for the forward pass, at least one."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(dataset: Dataset, batch_size: int, num_workers: int | None, **kw) -> DataLoader:
    """A DataLoader that overlaps decoding (worker processes) with compute."""
    workers = default_workers() if num_workers is None else num_workers
    extra = {"persistent_workers": False, "prefetch_factor": 4} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(), **extra, **kw)


@torch.inference_mode()
def forward_features(backbone: Backbone, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One eval-mode forward, channels-last (faster on CPU and GPU), bf16 autocast on CUDA."""
    x = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return backbone(x).float()


def _shard_path(entry: Path, k: int) -> Path:
    return entry / "partial" / f"part-{k:05d}.npy"


def _extract_shard(backbone, source, rows: np.ndarray, *, batch_size, num_workers, device, bar) -> np.ndarray:
    loader = make_loader(_Images(source, eval_transform(backbone.preprocess), rows), batch_size, num_workers)
    out = []
    for x in loader:
        out.append(forward_features(backbone, x, device).cpu().numpy())
        bar.update(len(x))
    return np.concatenate(out).astype(np.float32)


def _assemble(entry: Path, n_shards: int, n: int, dim: int, meta: dict) -> None:
    write_json(entry / "meta.json", meta)
    with atomic_path(entry / "features.npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        row = 0
        for k in range(n_shards):
            part = np.load(_shard_path(entry, k))
            arr[row: row + len(part)] = part
            row += len(part)
        arr.flush()
        del arr
    shutil.rmtree(entry / "partial", ignore_errors=True)


def extract_features(backbone: Backbone, source: ImageSource, *, cache_dir: str | Path | None = None,
                     batch_size: int = 128, num_workers: int | None = None, device: str | torch.device = "cpu",
                     shard_rows: int | None = None, progress: bool = True, desc: str = "features") -> np.ndarray:
    """Features of every image of ``source`` as a read-only (N, D) float32 memmap, cached.

    A hit costs one ``np.load(mmap_mode='r')``; a miss runs the backbone in eval
    mode over all images (resuming from finished shards) and stores the result.
    """
    shard_rows = shard_rows or int(os.environ.get("NOISYFT_SHARD_ROWS", 8192))
    entry = Path(cache_dir or default_cache_dir()) / "features" / feature_key(backbone, source)
    final = entry / "features.npy"
    if final.exists():
        arr = np.load(final, mmap_mode="r")
        if arr.shape == (len(source), backbone.num_features):
            return arr
    device = torch.device(device)
    backbone.eval().to(device).to(memory_format=torch.channels_last)
    n = len(source)
    n_shards = max(1, -(-n // shard_rows))
    todo = [k for k in range(n_shards) if not _shard_path(entry, k).exists()]
    done_rows = sum(min(shard_rows, n - k * shard_rows) for k in range(n_shards) if k not in todo)
    with tqdm(total=n, initial=done_rows, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for k in todo:
            rows = np.arange(k * shard_rows, min(n, (k + 1) * shard_rows))
            part = _extract_shard(backbone, source, rows, batch_size=batch_size, num_workers=num_workers, device=device, bar=bar)
            with atomic_path(_shard_path(entry, k)) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, part)
            maybe_die(f"extract:{k}")
    meta = {"backbone": backbone.name, "weights": backbone.weights_id, "preprocess": backbone.preprocess.to_dict(),
            "n": n, "dim": backbone.num_features, "images": source.fingerprint(), "format": FORMAT_VERSION}
    _assemble(entry, n_shards, n, backbone.num_features, meta)
    return np.load(final, mmap_mode="r")
