"""Loading training/test data: :func:`load_data` turns a ``--data`` spec and the
data options into :class:`DataSplits`.

Steps, in order: open the dataset (a tree or a named dataset); apply a labels
CSV; take the test set from ``test=`` or the dataset's own split, else hold out
a stratified fraction; draw ``max_train`` / ``max_test`` subsets; and, with
``skip_bad_images``, drop images that fail to decode. ``DataSplits.info``
records what each step did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, ImageSource, LabeledSet, SubsetSource, TorchImageDataset
from noisyft.data.datasets import DATASETS, open_dataset, read_tree
from noisyft.data.inputs import open_images
from noisyft.data.labels_csv import apply_labels_csv
from noisyft.data.readers import cifarn  # also registers the official-layout dataset readers
from noisyft.data.sources import ArraySource, FolderSource, ZipSource, find_bad_images, find_bad_indices
from noisyft.errors import UserError

__all__ = [
    "load_data", "LabeledSet", "DataSplits", "TorchImageDataset", "ImageSource", "SubsetSource",
    "DATASETS", "FolderSource", "ZipSource", "ArraySource", "find_bad_images",
    "stratified_holdout", "stratified_subset", "open_images",
]


def load_data(spec: str, *, labels_csv: Optional[str] = None, test: Optional[str] = None,
              test_fraction: float = 0.2, seed: int = 0, folder_labels_are_true: bool = False,
              skip_bad_images: bool = False, max_train: Optional[int] = None,
              max_test: Optional[int] = None) -> DataSplits:
    """Open ``spec`` and apply the data options; see the module docstring for the order.

    Without a labels CSV the dataset's labels are both ``labels`` and
    ``true_labels``; with one, ``true_labels`` are the folder labels only if
    ``folder_labels_are_true`` (else None). ``test_fraction=0`` means no test
    set unless the data has one. Subsets and holdouts are stratified and
    reproducible for a given ``seed``.
    """
    _check_options(test_fraction, max_train, max_test)
    splits = open_dataset(spec)
    info = {**splits.info, "spec": spec}
    train = _labelled_train(splits.train, labels_csv, folder_labels_are_true, info)
    test_set, info["test_from"] = _test_set(splits.test, test, info)
    if test_set is not None:
        test_set = align_classes(test_set, train.classes, info.get("test_source", info.get("source", spec)))
    elif test_fraction > 0:
        train, test_set = _holdout(train, test_fraction, seed, info)
    train = _cap(train, max_train, seed, "train", info)
    test_set = _cap(test_set, max_test, seed, "test", info)
    if skip_bad_images:
        train, test_set = _skip_bad(train, test_set, info)
    info.update(train_images=len(train), test_images=0 if test_set is None else len(test_set),
                num_classes=train.num_classes)
    extra = {k: _cap(v, max_test, seed, f"test_{k}", info) for k, v in splits.extra_tests.items()}
    info.update({f"test_{k}_images": len(v) for k, v in extra.items()})
    if splits.val is not None:
        info["val_images"] = len(splits.val)
    return DataSplits(train, test_set, name=splits.name, info=info, val=splits.val, extra_tests=extra)


def _check_options(test_fraction: float, max_train: Optional[int], max_test: Optional[int]) -> None:
    if not 0 <= test_fraction < 1:
        raise UserError(f"test_fraction must be in [0, 1), got {test_fraction}")
    for name, v in (("max_train", max_train), ("max_test", max_test)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be a positive number of images, got {v}")


def _labelled_train(train: LabeledSet, labels_csv: Optional[str], trusted: bool, info: dict) -> LabeledSet:
    """Apply the CSV, or insist that the tree had class folders."""
    root = info.get("source", "the data")
    if labels_csv and cifarn.is_human_labels(labels_csv):
        train = cifarn.apply_human_labels(labels_csv, train, info)
    elif labels_csv:
        if train.num_classes == 1:  # one folder holding everything: not a class
            train = LabeledSet(train.source, np.full(len(train), -1), [], None)
        train, csv_info = apply_labels_csv(labels_csv, train, root=root, folder_labels_are_true=trusted)
        info.update(csv_info)
    elif not train.classes:
        raise UserError(f"{root} has no <class>/<file> folders: arrange the images as "
                        f"<root>/<class>/<file> or give their labels with a labels CSV (path,label)")
    if train.num_classes < 2:
        raise UserError(f"{root}: found only {train.num_classes} class ({', '.join(train.classes)}); "
                        f"classification needs at least 2")
    return train


def _test_set(own: Optional[LabeledSet], test: Optional[str], info: dict):
    """The test set and where it came from: ``test=`` tree, the data's own split, or none yet."""
    if test:
        sets, tinfo = read_tree(Path(test).expanduser())
        info["test_source"] = tinfo["source"]
        return sets.get("test", sets["train"]), f"tree {tinfo['source']}"
    if own is not None:
        return own, "split"
    return None, "none"


def align_classes(data: LabeledSet, classes: list[str], where: str) -> LabeledSet:
    """Re-index ``data``'s labels into ``classes`` by class name."""
    if data.classes == classes:
        return data
    if not data.classes:
        raise UserError(f"test images in {where} have no <class>/<file> folders, so they have no labels")
    index = {c: k for k, c in enumerate(classes)}
    unknown = [c for c in data.classes if c not in index]
    if unknown:
        raise UserError(f"test class(es) {', '.join(unknown)} in {where} are not training classes "
                        f"({', '.join(classes)})")
    remap = np.array([index[c] for c in data.classes], dtype=np.int64)
    true = None if data.true_labels is None else remap[data.true_labels]
    return LabeledSet(data.source, remap[data.labels], list(classes), true)


def _holdout(train: LabeledSet, fraction: float, seed: int, info: dict):
    tr, te = stratified_holdout(train.labels, fraction, seed)
    info.update(test_from="holdout", holdout_fraction=fraction)
    if len(te) == 0:
        return train, None
    return train.subset(tr), train.subset(te)


def _cap(data: Optional[LabeledSet], cap: Optional[int], seed: int, split: str, info: dict):
    if data is None or cap is None or cap >= len(data):
        return data
    info[f"{split}_before_max"] = len(data)
    return data.subset(stratified_subset(data.labels, cap, seed))


def _skip_bad(train: LabeledSet, test: Optional[LabeledSet], info: dict):
    skipped: list[str] = []
    out = []
    for data in (train, test):
        if data is not None:
            bad = set(find_bad_indices(data.source))
            skipped += [data.ids[i] for i in sorted(bad)]
            data = data.subset([i for i in range(len(data)) if i not in bad]) if bad else data
        out.append(data)
    info["skipped_images"] = skipped
    return out[0], out[1]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, held-out), taking ``round(fraction·n_c)`` of each class.

    Every class keeps at least one training image. Both index arrays are sorted.
    """
    rng = np.random.default_rng([seed, 1])
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(int(round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:k])
    te = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    tr = np.setdiff1d(np.arange(len(labels)), te)
    return tr, te


def class_quotas(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """How many of each class to draw so ``k`` images are as class-balanced as counts allow."""
    quota = np.zeros_like(counts)
    left = min(k, int(counts.sum()))
    while left > 0:
        active = np.flatnonzero(quota < counts)
        share = left // len(active)
        if share == 0:
            quota[rng.choice(active, size=left, replace=False)] += 1
            break
        take = np.minimum(share, counts[active] - quota[active])
        quota[active] += take
        left -= int(take.sum())
    return quota


def stratified_subset(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of ``k`` images."""
    rng = np.random.default_rng([seed, 2])
    classes, inverse = np.unique(labels, return_inverse=True)
    quota = class_quotas(np.bincount(inverse, minlength=len(classes)), k, rng)
    picked = [rng.choice(np.flatnonzero(inverse == j), size=q, replace=False) for j, q in enumerate(quota) if q]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
