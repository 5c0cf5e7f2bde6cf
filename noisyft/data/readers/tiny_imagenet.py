"""Tiny-ImageNet-200 in its official layout (the ``tiny-imagenet-200.zip`` from the CS231n course, extracted).

``tiny-imagenet:PATH`` where PATH (or PATH/tiny-imagenet-200) holds::

    wnids.txt                     the 200 WordNet ids, one a line
    words.txt                     "wnid<TAB>name, synonym, ..." (the first name becomes the class name)
    train/<wnid>/images/*.JPEG    500 training images per class
    val/val_annotations.txt       "val_0.JPEG<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"
    val/images/*.JPEG             the 10,000 labelled validation images: the test set

Classes are in sorted-wnid order (what ``ImageFolder`` gives, as most published code uses); a
name two classes share gets its wnid appended. ``test/`` (unlabelled) is not read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import FileIndex, bad_line, dataset_root, find_base, need, read_lines, unique_names
from noisyft.data.sources import FolderSource, is_image_name
from noisyft.errors import UserError

NAME = "tiny-imagenet"
PUBLISHED = "Tiny-ImageNet is published at http://cs231n.stanford.edu/tiny-imagenet-200.zip"
USAGE = "--data tiny-imagenet:/path/to/tiny-imagenet-200 (the folder with wnids.txt, train/ and val/)"


def read_wnids(path: Path) -> dict[str, int]:
    """wnids.txt → {wnid: its line number}; a repeated wnid names both lines."""
    seen: dict[str, int] = {}
    for line, text in read_lines(path):
        wnid = text.split()[0]
        if wnid in seen:
            raise bad_line(path, line, f"wnid {wnid} repeats line {seen[wnid]}")
        seen[wnid] = line
    if len(seen) < 2:
        raise UserError(f"{NAME}: {path} lists {len(seen)} class(es); expected the 200 wnids")
    return seen


def class_names(base: Path, wnids: list[str]) -> list[str]:
    """Each wnid's first name from words.txt (the wnid itself when words.txt or its line is missing)."""
    words = {}
    path = base / "words.txt"
    if path.is_file():
        wanted = set(wnids)
        for _, text in read_lines(path):
            wnid, _, names = text.partition("\t")
            if wnid in wanted:
                words[wnid] = names.split(",")[0].strip() or wnid
    return unique_names([words.get(w, w) for w in wnids], wnids)


def train_images(base: Path, wnids: list[str], lines: dict[str, int], wnids_file: Path) -> tuple[list[str], np.ndarray]:
    """Every image in train/<wnid>/images, class by class; a class without images names its wnids.txt line."""
    ids, labels = [], []
    for c, wnid in enumerate(wnids):
        folder = f"train/{wnid}/images"
        try:
            names = sorted(n for n in os.listdir(base / folder) if is_image_name(n))
        except OSError:
            names = []
        if not names:
            raise bad_line(wnids_file, lines[wnid], f"class {wnid} has no training images in {base / folder}")
        ids += [f"{folder}/{n}" for n in names]
        labels += [c] * len(names)
    return ids, np.asarray(labels, dtype=np.int64)


def val_images(base: Path, index: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """val/val_annotations.txt → (val/images/... ids, labels); unknown wnids and missing images name the line."""
    path = need(base, "val/val_annotations.txt", NAME, PUBLISHED)
    files = FileIndex(base)
    ids, labels = [], []
    for line, text in read_lines(path):
        parts = text.split()
        if len(parts) < 2:
            raise bad_line(path, line, f"expected 'FILE WNID ...', got {text!r}")
        name, wnid = parts[0], parts[1]
        if wnid not in index:
            raise bad_line(path, line, f"unknown class {wnid} (not in wnids.txt)")
        if "/" in name or "\\" in name or name.startswith("."):
            raise bad_line(path, line, f"image name {name!r} must be a file name in val/images")
        ids.append(files.check(f"val/images/{name}", path, line))
        labels.append(index[wnid])
    if not ids:
        raise UserError(f"{NAME}: {path} lists no images")
    return ids, np.asarray(labels, dtype=np.int64)


@DATASETS.register(NAME)
def tiny_imagenet_dataset(path: Optional[str]) -> DataSplits:
    """Tiny-ImageNet-200: ``train/`` for training, the labelled ``val/`` as the test set."""
    base = find_base(dataset_root(path, NAME, USAGE), "wnids.txt", ("tiny-imagenet-200",))
    wnids_file = need(base, "wnids.txt", NAME, PUBLISHED)
    lines = read_wnids(wnids_file)
    wnids = sorted(lines)
    classes = class_names(base, wnids)
    need(base, "train", NAME, PUBLISHED)
    train_ids, train_y = train_images(base, wnids, lines, wnids_file)
    test_ids, test_y = val_images(base, {w: k for k, w in enumerate(wnids)})
    train = LabeledSet(FolderSource(base, train_ids), train_y, classes, train_y.copy())
    test = LabeledSet(FolderSource(base, test_ids), test_y, classes, test_y.copy())
    info = {"dataset": NAME, "source": str(base), "layout": "tiny-imagenet", "wnids": wnids}
    return DataSplits(train, test, name=NAME, info=info)
