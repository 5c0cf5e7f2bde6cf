"""Clothing1M (Xiao et al., 2015) in its official layout: train on the noisy web labels, test on the clean test set.

``clothing1m:PATH`` where PATH holds (as distributed by the authors)::

    category_names_eng.txt       14 class names, one a line (line k = class k-1)
    noisy_label_kv.txt           "images/0/46/3193751042,3267530990.jpg 12": key and noisy class id (0-based)
    clean_label_kv.txt           the same for the human-checked clean labels
    noisy_train_key_list.txt     the training keys (one a line); labels from noisy_label_kv.txt
    clean_test_key_list.txt      the test keys; labels from clean_label_kv.txt
    clean_val_key_list.txt       (optional) the clean validation keys: with ``clothing1m:PATH?val=clean`` they are
                                 the run's validation set (model selection on clean labels, as the
                                 literature does) instead of a share carved from the noisy training set
    images/...                   the JPEGs the keys name (relative to PATH)

The noisy training images' true labels are not known for most of them, so the training set
has none (precision/recall are not reported); the info says how many training keys also have
a clean label. Image ids are the keys, so the feature cache, the label-issue table and a
labels CSV all name images as the dataset does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import (FileIndex, bad_line, dataset_root, find_base, need, parse_int, read_lines,
                                         safe_relpath, spec_options, unique_names)
from noisyft.data.sources import FolderSource
from noisyft.errors import UserError

NAME = "clothing1m"
PUBLISHED = "Clothing1M is distributed by its authors on request (github.com/Cysu/noisy_label)"
USAGE = "--data clothing1m:/path/to/clothing1m[?val=clean] (the folder with noisy_label_kv.txt and images/)"
OPTIONS = {"val": "clean: the clean validation keys (clean_val_key_list.txt) are the validation set"}


def read_kv(path: Path, num_classes: int) -> dict[str, int]:
    """``key label`` lines → {key: label}; a malformed line, a bad id or a repeated key names the line."""
    out: dict[str, int] = {}
    for line, text in read_lines(path):
        parts = text.rsplit(None, 1)
        if len(parts) != 2:
            raise bad_line(path, line, f"expected 'KEY LABEL', got {text!r}")
        key = safe_relpath(path, line, parts[0])
        label = parse_int(path, line, parts[1], "class id")
        if not 0 <= label < num_classes:
            raise bad_line(path, line, f"unknown class id {label} (category_names_eng.txt names {num_classes} "
                                       f"classes, ids 0..{num_classes - 1})")
        if key in out:
            raise bad_line(path, line, f"key {key} is listed twice")
        out[key] = label
    return out


def read_split(path: Path, labels: dict[str, int], kv_name: str, files: FileIndex) -> tuple[list[str], np.ndarray]:
    """A key list → (keys, labels); a key with no label in ``kv_name`` or no image names its line."""
    keys, ys, seen = [], [], set()
    for line, text in read_lines(path):
        key = safe_relpath(path, line, text.split()[0])
        if key not in labels:
            raise bad_line(path, line, f"key {key} has no label in {kv_name}")
        if key in seen:
            raise bad_line(path, line, f"key {key} is listed twice")
        seen.add(key)
        keys.append(files.check(key, path, line))
        ys.append(labels[key])
    if not keys:
        raise UserError(f"{NAME}: {path} lists no images")
    return keys, np.asarray(ys, dtype=np.int64)


@DATASETS.register(NAME)
def clothing1m_dataset(path: Optional[str]) -> DataSplits:
    """Clothing1M: train on ``noisy_train_key_list.txt`` (noisy labels), test on ``clean_test_key_list.txt``."""
    path, opts = spec_options(path, NAME, OPTIONS)
    if opts.get("val", "clean") != "clean":
        raise UserError(f"{NAME}: val={opts['val']} is not an option value; val=clean uses clean_val_key_list.txt")
    base = find_base(dataset_root(path, NAME, USAGE), "noisy_label_kv.txt", ("clothing1m", "Clothing1M", "clothing1M"))
    got = lambda rel: need(base, rel, NAME, PUBLISHED)  # noqa: E731
    names_file = got("category_names_eng.txt")
    names = [t for _, t in read_lines(names_file)]
    classes = unique_names(names, [str(k) for k in range(len(names))])
    if len(classes) < 2:
        raise UserError(f"{NAME}: {names_file} names {len(classes)} class(es); expected the 14 category names")
    noisy = read_kv(got("noisy_label_kv.txt"), len(classes))
    clean = read_kv(got("clean_label_kv.txt"), len(classes))
    files = FileIndex(base)
    train_keys, train_y = read_split(got("noisy_train_key_list.txt"), noisy, "noisy_label_kv.txt", files)
    test_keys, test_y = read_split(got("clean_test_key_list.txt"), clean, "clean_label_kv.txt", files)
    train = LabeledSet(FolderSource(base, train_keys), train_y, classes, None)
    test = LabeledSet(FolderSource(base, test_keys), test_y, classes, test_y.copy())
    info = {"dataset": NAME, "source": str(base), "layout": "clothing1m",
            "train_with_clean_label": sum(k in clean for k in train_keys)}
    val = None
    if "val" in opts:
        val_keys, val_y = read_split(got("clean_val_key_list.txt"), clean, "clean_label_kv.txt", files)
        val = LabeledSet(FolderSource(base, val_keys), val_y, classes, val_y.copy())
        info["val_from"] = "clean_val_key_list.txt"
    elif (base / "clean_val_key_list.txt").is_file():
        info["clean_val_keys"] = sum(1 for _ in read_lines(base / "clean_val_key_list.txt"))
    return DataSplits(train, test, name=NAME, info=info, val=val)
