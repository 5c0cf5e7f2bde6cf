"""Stanford Cars (Krause et al., 2013) in its official layout: the devkit ``.mat`` annotations and two image folders.

``stanford-cars:PATH`` where PATH (or PATH/stanford_cars, torchvision's layout) holds::

    devkit/cars_meta.mat             class_names: the 196 class names (class ids are 1-based)
    devkit/cars_train_annos.mat      annotations: bbox_x1..bbox_y2, class, fname, one per training image
    cars_test_annos_withlabels.mat   the same for the test images (published separately from the devkit;
                                     also looked for in devkit/)
    cars_train/*.jpg, cars_test/*.jpg

The ``.mat`` files are read with ``scipy.io.loadmat`` (MATLAB v5 data, no code). Errors about
an annotation name the file and the annotation's 1-based number. Bounding boxes are not used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import FileIndex, dataset_root, find_base, need, unique_names
from noisyft.data.sources import FolderSource
from noisyft.errors import UserError

NAME = "stanford-cars"
PUBLISHED = ("Stanford Cars is published at https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_devkit.tgz, "
             "cars_train.tgz, cars_test.tgz, cars_test_annos_withlabels.mat; mirrored on Kaggle)")
USAGE = "--data stanford-cars:/path/to/stanford_cars (the folder with devkit/, cars_train/ and cars_test/)"
TEST_ANNOS = "cars_test_annos_withlabels.mat"


def load_mat(path: Path, key: str) -> np.ndarray:
    """``key`` of a MATLAB file, flattened; one-line errors for unreadable files and a missing key."""
    try:
        import scipy.io
    except ImportError:  # scipy comes with scikit-learn; a bare environment may lack it
        raise UserError(f"{NAME}: reading {path} needs scipy (pip install scipy)") from None
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False)
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise UserError(f"{NAME}: cannot read {path} as a MATLAB file: {str(e) or type(e).__name__}") from None
    if key not in mat:
        have = ", ".join(k for k in mat if not k.startswith("__"))
        raise UserError(f"{NAME}: {path} has no {key!r} (it holds: {have}); is it the devkit file?")
    return np.asarray(mat[key]).ravel()


def _scalar(value) -> object:
    """A MATLAB cell or 1×1 array → its one Python value."""
    a = np.asarray(value).ravel()
    if a.size != 1:
        raise ValueError(f"expected one value, found {a.size}")
    v = a[0]
    return _scalar(v) if isinstance(v, np.ndarray) else v.item() if hasattr(v, "item") else v


def read_annotations(path: Path, folder: str, num_classes: int, files: FileIndex) -> tuple[list[str], np.ndarray]:
    """The ``annotations`` struct array → (image ids under ``folder``, 0-based labels)."""
    annos = load_mat(path, "annotations")
    names = annos.dtype.names or ()
    for field in ("class", "fname"):
        if field not in names:
            raise UserError(f"{NAME}: {path}: annotations lack the field {field!r} (fields: {', '.join(names)}); "
                            f"for the test set use {TEST_ANNOS}")
    ids, labels = [], []
    for k, rec in enumerate(annos, 1):
        where = f"{path}: annotation {k}"
        try:
            fname, cls = str(_scalar(rec["fname"])), int(_scalar(rec["class"]))
        except (ValueError, TypeError, IndexError) as e:
            raise UserError(f"{where}: malformed fname/class ({e})") from None
        if not 1 <= cls <= num_classes:
            raise UserError(f"{where}: unknown class id {cls} (cars_meta.mat names {num_classes} classes, ids 1..{num_classes})")
        if "/" in fname or "\\" in fname or fname.startswith("."):
            raise UserError(f"{where}: fname {fname!r} must be a file name in {folder}/")
        rel = f"{folder}/{fname}"
        if not files.exists(rel):
            raise UserError(f"{where}: image {rel} not found under {files.root}")
        ids.append(rel)
        labels.append(cls - 1)
    if not ids:
        raise UserError(f"{NAME}: {path} holds no annotations")
    return ids, np.asarray(labels, dtype=np.int64)


@DATASETS.register(NAME)
def stanford_cars_dataset(path: Optional[str]) -> DataSplits:
    """Stanford Cars: ``cars_train`` with its devkit labels, ``cars_test`` with the published test labels."""
    base = find_base(dataset_root(path, NAME, USAGE), "devkit", ("stanford_cars", "stanford-cars"))
    meta = need(base, "devkit/cars_meta.mat", NAME, PUBLISHED)
    try:
        names = [str(_scalar(x)).strip() for x in load_mat(meta, "class_names")]
    except (ValueError, TypeError, IndexError) as e:
        raise UserError(f"{NAME}: {meta}: class_names is not a list of names ({e})") from None
    if len(names) < 2:
        raise UserError(f"{NAME}: {meta} names {len(names)} class(es); expected 196")
    classes = unique_names(names, [str(k) for k in range(1, len(names) + 1)])
    train_annos = need(base, "devkit/cars_train_annos.mat", NAME, PUBLISHED)
    test_annos = base / "devkit" / TEST_ANNOS if (base / "devkit" / TEST_ANNOS).is_file() else need(base, TEST_ANNOS, NAME, PUBLISHED)
    files = FileIndex(base)
    sets = []
    for annos, folder in ((train_annos, "cars_train"), (test_annos, "cars_test")):
        need(base, folder, NAME, PUBLISHED)
        ids, y = read_annotations(annos, folder, len(classes), files)
        sets.append(LabeledSet(FolderSource(base, ids), y, classes, y.copy()))
    info = {"dataset": NAME, "source": str(base), "layout": "stanford-cars"}
    return DataSplits(sets[0], sets[1], name=NAME, info=info)
