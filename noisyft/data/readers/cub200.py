"""CUB-200-2011 (Caltech-UCSD Birds) in its official layout (``CUB_200_2011.tgz``, extracted).

``cub200:PATH`` where PATH (or PATH/CUB_200_2011) holds::

    classes.txt              "1 001.Black_footed_Albatross": class id (1-based) and folder name
    images.txt               "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg": image id and path
    image_class_labels.txt   "1 1": image id and class id
    train_test_split.txt     "1 0": image id and 1 (train) or 0 (test)
    images/<folder>/*.jpg

Class names are the folder names without their number (``Black_footed_Albatross``); the
labels are the dataset's own (clean) ones, so noise is injected with ``--noise`` or given with
``--labels``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import (FileIndex, bad_line, dataset_root, find_base, need, parse_int, read_lines,
                                         safe_relpath, unique_names)
from noisyft.data.sources import FolderSource
from noisyft.errors import UserError

NAME = "cub200"
PUBLISHED = "CUB-200-2011 is published at https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)"
USAGE = "--data cub200:/path/to/CUB_200_2011 (the folder with images.txt and images/)"


def read_id_table(path: Path, what: str) -> dict[int, tuple[str, int]]:
    """``ID VALUE`` lines → {id: (value, line)}; malformed lines and repeated ids name the line."""
    out: dict[int, tuple[str, int]] = {}
    for line, text in read_lines(path):
        parts = text.split(None, 1)
        if len(parts) != 2:
            raise bad_line(path, line, f"expected 'ID {what}', got {text!r}")
        k = parse_int(path, line, parts[0], "id")
        if k in out:
            raise bad_line(path, line, f"id {k} repeats line {out[k][1]}")
        out[k] = (parts[1].strip(), line)
    return out


def _class_name(folder: str) -> str:
    """``001.Black_footed_Albatross`` → ``Black_footed_Albatross``."""
    head, dot, rest = folder.partition(".")
    return rest if dot and head.isdigit() and rest else folder


@DATASETS.register(NAME)
def cub200_dataset(path: Optional[str]) -> DataSplits:
    """CUB-200-2011 with its official train/test split."""
    base = find_base(dataset_root(path, NAME, USAGE), "images.txt", ("CUB_200_2011",))
    got = lambda rel: need(base, rel, NAME, PUBLISHED)  # noqa: E731
    classes_file, images_file = got("classes.txt"), got("images.txt")
    labels_file, split_file = got("image_class_labels.txt"), got("train_test_split.txt")
    class_rows = read_id_table(classes_file, "CLASS_FOLDER")
    class_ids = sorted(class_rows)
    if len(class_ids) < 2:
        raise UserError(f"{NAME}: {classes_file} lists {len(class_ids)} class(es); expected 200")
    index = {k: j for j, k in enumerate(class_ids)}
    folders = [class_rows[k][0] for k in class_ids]
    classes = unique_names([_class_name(f) for f in folders], folders)
    images = read_id_table(images_file, "PATH")
    labels, splits = read_id_table(labels_file, "CLASS_ID"), read_id_table(split_file, "IS_TRAIN")
    files = FileIndex(base / "images")
    parts: dict[int, tuple[list[str], list[int]]] = {1: ([], []), 0: ([], [])}
    for image_id in sorted(images):
        rel, line = images[image_id]
        rel = files.check(safe_relpath(images_file, line, rel), images_file, line)
        if image_id not in labels:
            raise bad_line(images_file, line, f"image id {image_id} has no line in image_class_labels.txt")
        if image_id not in splits:
            raise bad_line(images_file, line, f"image id {image_id} has no line in train_test_split.txt")
        cls_text, cls_line = labels[image_id]
        cls = parse_int(labels_file, cls_line, cls_text, "class id")
        if cls not in index:
            raise bad_line(labels_file, cls_line, f"unknown class id {cls} (not in classes.txt)")
        flag_text, flag_line = splits[image_id]
        flag = parse_int(split_file, flag_line, flag_text, "is-train flag")
        if flag not in (0, 1):
            raise bad_line(split_file, flag_line, f"is-train flag {flag} is not 0 or 1")
        parts[flag][0].append(f"images/{rel}")
        parts[flag][1].append(index[cls])
    sets = []
    for flag, split in ((1, "training"), (0, "test")):
        ids, ys = parts[flag]
        if not ids:
            raise UserError(f"{NAME}: {split_file} marks no {split} images")
        y = np.asarray(ys, dtype=np.int64)
        sets.append(LabeledSet(FolderSource(base, ids), y, classes, y.copy()))
    info = {"dataset": NAME, "source": str(base), "layout": "cub200"}
    return DataSplits(sets[0], sets[1], name=NAME, info=info)
