"""A run's data from its config: load, inject noise if asked, carve the noisy validation split (or take the
dataset's own clean one, e.g. ``clothing1m:PATH?val=clean``).

One function, used by ``fit`` and by the report (which rebuilds a finished run's training set
from its ``config.json``): everything is seeded, so the same config gives the same samples.
"""
from __future__ import annotations

from typing import Optional

from noisyft.config import FitConfig
from noisyft.data import load_data, stratified_holdout
from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.noise import apply_noise, parse_noise
from noisyft.errors import UserError


def prepare_data(cfg: FitConfig) -> tuple[DataSplits, Optional[LabeledSet], dict]:
    """Load the data, inject noise if asked, carve the noisy validation split: ``(splits, val, noise_info)``."""
    splits = load_data(cfg.data, labels_csv=cfg.labels, test=cfg.test, test_fraction=cfg.test_fraction, seed=cfg.seed,
                       folder_labels_are_true=cfg.folder_labels_are_true, skip_bad_images=cfg.skip_bad_images,
                       max_train=cfg.max_train, max_test=cfg.max_test)
    noise_info: dict = {}
    if cfg.noise:
        if cfg.labels:
            raise UserError("--noise and --labels both given: the CSV already holds the given labels; drop one")
        splits.train, noise_info = apply_noise(parse_noise(cfg.noise), splits.train, cfg.seed)
    val = splits.val  # the dataset's own clean validation set, when the spec asked for it
    if val is not None and cfg.val_fraction > 0:
        raise UserError(f"--val-fraction {cfg.val_fraction:g} and the dataset's own validation set ({cfg.data}) both "
                        f"given: drop one")
    if cfg.val_fraction > 0:
        keep, held = stratified_holdout(splits.train.labels, cfg.val_fraction, cfg.seed + 1)
        val, splits.train = splits.train.subset(held), splits.train.subset(keep)
    return splits, val, noise_info
