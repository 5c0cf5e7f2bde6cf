"""WebVision 1.0 (Li et al., 2017) in its official layout; ``webvision`` is mini-WebVision, the noisy-label benchmark.

``webvision:PATH`` (mini: the first 50 classes of the Google images, as DivideMix, ELR and the
TURN paper use) and ``webvision-full:PATH`` (all classes, Google plus Flickr images when the
Flickr list is there), where PATH holds (the resized release)::

    info/train_filelist_google.txt   "google/q0001/000000.jpg 0": image path (relative to PATH) and class id (0-based)
    info/train_filelist_flickr.txt   (optional) the same for the Flickr images
    info/val_filelist.txt            "val000001.jpg 0": the labelled validation images: the test set
    info/synsets.txt                 (optional) "n01440764 tench, Tinca tinca": class names, one a line (line k = id k-1)
    google/..., flickr/..., val_images_256/ (or val_images/)

The training labels are the (noisy) web labels; no true labels are known for them.

The ILSVRC2012 validation images, which the literature reports as a second test set, are read
when present as ``<wnid>/<image>`` folders (ImageNet's usual prepared layout) in
``PATH/imagenet/val`` (or ``PATH/ILSVRC2012_img_val``, ``PATH/imagenet_val``), or in the folder
given with ``webvision:PATH?imagenet=DIR``; the wnids are matched to the classes through
``info/synsets.txt``. A run then reports ``test_acc_imagenet`` beside ``test_acc``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import (FileIndex, bad_line, dataset_root, find_base, need, parse_int, read_lines,
                                         safe_relpath, spec_options, unique_names)
from noisyft.data.sources import FolderSource, is_image_name
from noisyft.errors import UserError

PUBLISHED = "WebVision 1.0 is published at https://data.vision.ee.ethz.ch/cvl/webvision/dataset2017.html"
MINI_CLASSES = 50
VAL_FOLDERS = ("val_images_256", "val_images")
IMAGENET_FOLDERS = ("imagenet/val", "ILSVRC2012_img_val", "imagenet_val")
OPTIONS = {"imagenet": "the ILSVRC2012 validation images as <wnid>/<image> folders (a second test set)"}


def imagenet_val(base: Path, folder: Path, classes: list[str], name: str) -> LabeledSet:
    """The ILSVRC2012 validation images of ``classes`` from ``folder/<wnid>/<image>``, labelled via info/synsets.txt."""
    synsets = need(base, "info/synsets.txt", name, "it maps the ILSVRC2012 validation folders (wnids) to classes")
    index = {text.split(None, 1)[0]: k for k, (_, text) in enumerate(read_lines(synsets))}
    ids, labels = [], []
    for wnid in sorted(os.listdir(folder)):
        if not (folder / wnid).is_dir():
            continue
        if wnid not in index:
            raise UserError(f"{name}: {folder / wnid}: {wnid} is not a wnid listed in {synsets} "
                            f"(expected the ILSVRC2012 validation images as <wnid>/<image>)")
        if index[wnid] >= len(classes):
            continue  # a class mini-WebVision leaves out
        files = sorted(f for f in os.listdir(folder / wnid) if is_image_name(f))
        ids += [f"{wnid}/{f}" for f in files]
        labels += [index[wnid]] * len(files)
    if not ids:
        raise UserError(f"{name}: {folder} holds no images of the {len(classes)} classes as <wnid>/<image> folders")
    y = np.asarray(labels, dtype=np.int64)
    return LabeledSet(FolderSource(folder, ids), y, classes, y.copy())


def class_names(base: Path, count: Optional[int]) -> list[str]:
    """Names from info/synsets.txt (first name of each line), else the ids as text; ``count`` caps them."""
    path = base / "info" / "synsets.txt"
    if not path.is_file():
        return [str(k) for k in range(count or 1000)]
    rows = [text.split(None, 1) for _, text in read_lines(path)][:count]
    wnids = [r[0] for r in rows]
    return unique_names([(r[1].split(",")[0].strip() if len(r) > 1 else r[0]) for r in rows], wnids)


def read_list(path: Path, num_classes: int, known: int, files: FileIndex, folder: str = "") -> tuple[list[str], list[int]]:
    """``PATH LABEL`` lines → (ids, labels) of the images whose class is below ``num_classes``.

    ``known`` is how many classes exist at all (ids at or above it are errors; ids between
    ``num_classes`` and ``known`` are the classes mini-WebVision leaves out).
    """
    ids, labels = [], []
    for line, text in read_lines(path):
        parts = text.split()
        if len(parts) != 2:
            raise bad_line(path, line, f"expected 'IMAGE LABEL', got {text!r}")
        label = parse_int(path, line, parts[1], "class id")
        if not 0 <= label < known:
            raise bad_line(path, line, f"unknown class id {label} (ids are 0..{known - 1})")
        if label >= num_classes:
            continue
        rel = safe_relpath(path, line, parts[0])
        ids.append(files.check(f"{folder}{rel}", path, line))
        labels.append(label)
    return ids, labels


def load_webvision(path: Optional[str], name: str, mini: bool) -> DataSplits:
    usage = f"--data {name}:/path/to/webvision[?imagenet=DIR] (the folder with info/ and google/)"
    path, opts = spec_options(path, name, OPTIONS)
    base = find_base(dataset_root(path, name, usage), "info/train_filelist_google.txt", ("webvision", "WebVision"))
    lists = [need(base, "info/train_filelist_google.txt", name, PUBLISHED)]
    if not mini and (base / "info" / "train_filelist_flickr.txt").is_file():
        lists.append(base / "info" / "train_filelist_flickr.txt")
    val_list = need(base, "info/val_filelist.txt", name, PUBLISHED)
    val_folder = next((f for f in VAL_FOLDERS if (base / f).is_dir()), None)
    if val_folder is None:
        need(base, VAL_FOLDERS[0], name, PUBLISHED)
    names = class_names(base, None)
    known = len(names)
    num_classes = min(MINI_CLASSES, known) if mini else known
    files = FileIndex(base)
    train_ids, train_y = [], []
    for lst in lists:
        ids, ys = read_list(lst, num_classes, known, files)
        train_ids += ids
        train_y += ys
    test_ids, test_y = read_list(val_list, num_classes, known, files, folder=f"{val_folder}/")
    for what, ids, lst in (("training", train_ids, lists[0]), ("validation", test_ids, val_list)):
        if not ids:
            raise UserError(f"{name}: {lst} lists no {what} images of classes 0..{num_classes - 1}")
    classes = names[:num_classes]
    train = LabeledSet(FolderSource(base, train_ids), np.asarray(train_y, dtype=np.int64), classes, None)
    test_y = np.asarray(test_y, dtype=np.int64)
    test = LabeledSet(FolderSource(base, test_ids), test_y, classes, test_y.copy())
    info = {"dataset": name, "source": str(base), "layout": "webvision", "subset": "mini" if mini else "full",
            "train_lists": [p.name for p in lists]}
    extra = {}
    folder = Path(opts["imagenet"]).expanduser() if "imagenet" in opts else \
        next((base / f for f in IMAGENET_FOLDERS if (base / f).is_dir()), None)
    if folder is not None:
        if not folder.is_dir():
            raise UserError(f"{name}: imagenet={folder}: not a folder; give the ILSVRC2012 validation images as "
                            f"<wnid>/<image> folders")
        extra["imagenet"] = imagenet_val(base, folder, classes, name)
        info["imagenet_val"] = str(folder)
    return DataSplits(train, test, name=name, info=info, extra_tests=extra)


@DATASETS.register("webvision")
def webvision_mini_dataset(path: Optional[str]) -> DataSplits:
    """mini-WebVision: the Google images of the first 50 classes; the WebVision validation images of those classes as test."""
    return load_webvision(path, "webvision", mini=True)


@DATASETS.register("webvision-full")
def webvision_full_dataset(path: Optional[str]) -> DataSplits:
    """WebVision 1.0, every class, Google and (when listed) Flickr images."""
    return load_webvision(path, "webvision-full", mini=False)
