"""What the report needs beyond the run directory: the training images and backbone features.

The training set is rebuilt from the run's ``config.json`` with
:func:`noisyft.data.prepare.prepare_data` (same data, noise, subsets and validation split,
all seeded) and checked against ``labels.csv``, so images and labels are those
the run saw. Features *before* fine-tuning are the frozen backbone's (read from
the feature cache when the run left one, else computed on the subsample only);
features *after* come from the run's saved model. Both are embedded with t-SNE.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from noisyft.backbones import create_backbone
from noisyft.config import FitConfig
from noisyft.data.base import LabeledSet
from noisyft.data.prepare import prepare_data
from noisyft.engine import resolve_device
from noisyft.features.cache import cached_features
from noisyft.features.loader import source_features
from noisyft.run.model import load_model


def rebuild_train(config: dict, labels: pd.DataFrame) -> LabeledSet:
    """The run's training set, rebuilt from its config; ValueError if it differs from ``labels.csv``."""
    cfg = FitConfig.from_dict(config)
    splits, _, _ = prepare_data(cfg)
    train = splits.train
    if len(train) != len(labels) or [str(i) for i in train.ids] != [str(i) for i in labels["id"]] \
            or not np.array_equal(train.labels, labels["given_label"].to_numpy()):
        raise ValueError("the data found at the run's --data path is not the training set the run used "
                         "(changed since the run?)")
    return train


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` samples (uniform, seeded)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def _forward(backbone, source, rows: np.ndarray, **kw) -> np.ndarray:
    """Eval-mode features of ``source`` at ``rows`` (same preprocessing and forward as the feature cache)."""
    backbone.eval().to(kw["device"]).to(memory_format=torch.channels_last)
    return source_features(backbone, source, rows, **kw)


def features_before_after(run_dir: Path, config: dict, train: LabeledSet, rows: np.ndarray, *, batch_size: int = 128,
                          num_workers: Optional[int] = 0, device: str = "auto",
                          allow_remote_code: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(before, after)`` features of training samples ``rows``: frozen pre-trained backbone vs. fine-tuned one.

    Remote model code runs only with the caller's ``allow_remote_code``, never because the run's config says so.
    """
    dev = resolve_device(device)
    with torch.random.fork_rng():  # a randomly initialised backbone gets the run's initial weights
        torch.manual_seed(int(config.get("seed", 0)))
        frozen = create_backbone(config["backbone"], pretrained=config.get("pretrained", True),
                                 image_size=config.get("image_size"),
                                 allow_remote_code=allow_remote_code)  # the caller's grant, not the folder's
    cached = cached_features(frozen, train.source, config.get("cache_dir"))  # never computes: else only ``rows``
    kw = dict(batch_size=batch_size, num_workers=num_workers, device=dev)
    before = np.asarray(cached[rows]) if cached is not None else _forward(frozen, train.source, rows, **kw)
    model, _ = load_model(run_dir, allow_remote_code=allow_remote_code)
    after = _forward(model.backbone, train.source, rows, **kw)
    return before, after


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (after PCA to 50 dimensions when wider), deterministic for a seed.

    Runs single-threaded: sklearn's OpenMP t-SNE slows down up to 20-fold on a
    busy machine when its threads spin against other processes, while one thread
    embeds 2,000 points in seconds.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(0)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    with threadpool_limits(1):
        if x.shape[1] > 50 and x.shape[0] > 50:
            x = PCA(50, random_state=seed).fit_transform(x)
        return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)
