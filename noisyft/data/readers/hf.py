"""Hugging Face ``datasets`` datasets: ``hf:NAME_OR_DIR[:split][?image=COL&label=COL&test=SPLIT]``.

Where the dataset comes from, in order:

* a ``save_to_disk`` folder (``dataset_dict.json``, or ``state.json`` for one split): opened
  memory-mapped in place, nothing copied;
* a folder (or file) of ``.parquet`` / ``.arrow`` files, splits named by file or folder
  (``train-00000-of-00004.parquet``, ``test/…``), as the Hub stores them: read by ``datasets``'
  own builder, which converts them once into its cache under ``$NOISYFT_CACHE/hf-datasets``;
* otherwise a Hub id (``cifar10``, ``user/name``), when the Hub is reachable; offline it fails
  with one line.

The training split is the one named after the last ``:`` (default ``train``, or the only
split); the test split is ``test=SPLIT``, else ``test``, ``validation``, ``valid`` or ``val`` if
present (none: ``load_data`` holds out a share). The image column is the one of feature type
``datasets.Image`` (or ``image=COL``, which may also name a binary column of encoded bytes); the
label column the ``ClassLabel`` one (or ``label=COL``: integer ids, or strings whose sorted
values become the classes). Class names are the ClassLabel's names. Sample ids are
``SPLIT/ROW``: stable for a given dataset. Rows are read one at a time from the memory-mapped
Arrow data, so a million images never sit in memory.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from noisyft.data.base import DataSplits, ImageSource, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import cache_root, spec_options
from noisyft.data.sources import content_sample_digest, decode_image
from noisyft.errors import UserError

NAME = "hf"
USAGE = "--data hf:DIR_OR_HUB_ID[:split][?image=COL&label=COL&test=SPLIT]"
INSTALL = "pip install 'noisyft[hf]' (or: pip install 'datasets>=2.14')"
OPTIONS = {"image": "the image column", "label": "the label column", "test": "the test split"}
TEST_SPLITS = ("test", "validation", "valid", "val")


def _datasets():
    """The ``datasets`` package, or the one-line UserError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf: reading Hugging Face datasets needs the 'datasets' package: {INSTALL}") from None
    return datasets


def split_target(target: str) -> tuple[str, Optional[str]]:
    """``DIR:split`` → (DIR, split); a path or hub id without a ``:split`` suffix → (it, None)."""
    head, colon, tail = target.rpartition(":")
    if colon and head and tail and "/" not in tail and "\\" not in tail and not Path(target).expanduser().exists():
        return head, tail
    return target, None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def open_splits(target: str) -> tuple[dict[str, Any], str]:
    """The dataset's splits (name → ``datasets.Dataset``) and a description of where they came from."""
    ds = _datasets()
    p = Path(target).expanduser()
    hf_cache = str(cache_root() / "hf-datasets")
    try:
        if (p / "dataset_dict.json").is_file():
            return dict(ds.load_from_disk(str(p))), f"save_to_disk folder {p}"
        if (p / "state.json").is_file():
            return {"train": ds.load_from_disk(str(p))}, f"save_to_disk folder {p}"
        if p.is_file() and p.suffix in (".parquet", ".arrow"):
            return dict(ds.load_dataset(p.suffix[1:], data_files={"train": str(p)}, cache_dir=hf_cache)), f"file {p}"
        if p.is_dir():
            for kind in ("parquet", "arrow"):
                if next(p.rglob(f"*.{kind}"), None) is not None:
                    return dict(ds.load_dataset(kind, data_dir=str(p), cache_dir=hf_cache)), f"{kind} folder {p}"
            raise UserError(f"hf: {p} holds no dataset_dict.json, state.json, .parquet or .arrow files "
                            f"(save a dataset with Dataset.save_to_disk, or point at its Parquet files)")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"hf: cannot read the dataset in {p}: {_first_line(e)}") from None
    if target.startswith((".", "/", "~")) or p.suffix in (".parquet", ".arrow"):
        raise UserError(f"hf: {p} not found; {USAGE}")
    try:
        return dict(ds.load_dataset(target, cache_dir=hf_cache)), f"Hugging Face Hub {target}"
    except Exception as e:
        raise UserError(f"hf: {target!r} is not a local folder and the Hugging Face Hub cannot give it "
                        f"(offline? download it elsewhere and save_to_disk): {_first_line(e)}") from None


def _pick(features: dict, kind: type, named: Optional[str], what: str, where: str) -> str:
    """The column named ``named``, else the first of feature type ``kind``; a UserError naming the columns otherwise."""
    if named is not None:
        if named not in features:
            raise UserError(f"hf: {where} has no column {named!r} ({what}); columns: {', '.join(features)}")
        return named
    found = [c for c, f in features.items() if isinstance(f, kind)]
    if not found:
        raise UserError(f"hf: {where} has no {kind.__name__} column for the {what}s; name it with ?{what}=COL "
                        f"(columns: {', '.join(features)})")
    return found[0]


def column_labels(data: Any, col: str, where: str, known: Optional[list[str]] = None) -> tuple[np.ndarray, list[str]]:
    """The label column as int64 ids and the class names: the ClassLabel's names, else ``known`` (the training
    split's classes, for a test split), else the sorted strings or the ids ``0..max``."""
    ds = _datasets()
    feature = data.features[col]
    values = data.data.column(col).to_pylist() if data._indices is None else list(data[col])
    if isinstance(feature, ds.ClassLabel):
        classes = list(feature.names)
    elif values and all(isinstance(v, str) for v in values):
        classes = known if known is not None else sorted(set(values))
        index = {c: k for k, c in enumerate(classes)}
        bad = next((i for i, v in enumerate(values) if v not in index), None)
        if bad is not None:
            raise UserError(f"hf: {where} row {bad}: label {values[bad]!r} in column {col!r} is not a training class")
        values = [index[v] for v in values]
    else:
        bad = next((i for i, v in enumerate(values) if not isinstance(v, (int, np.integer)) or isinstance(v, bool)), None)
        if bad is not None:
            raise UserError(f"hf: {where} row {bad}: label {values[bad]!r} in column {col!r} is not a class id")
        classes = known if known is not None else [str(k) for k in range(max(values, default=-1) + 1)]
    y = np.asarray(values, dtype=np.int64)
    wrong = np.flatnonzero((y < 0) | (y >= len(classes)))
    if len(wrong):
        i = int(wrong[0])
        raise UserError(f"hf: {where} row {i}: label {int(y[i])} in column {col!r} is not one of the {len(classes)} "
                        f"classes (an unlabelled split? name another with ?test=SPLIT)")
    return y, classes


class HFSource(ImageSource):
    """Rows of a ``datasets.Dataset``'s image column, read one at a time (never decoded by ``datasets``)."""

    def __init__(self, data: Any, column: str, split: str, where: str):
        ds = _datasets()
        data = data.select_columns([column])
        if isinstance(data.features[column], ds.Image):
            data = data.cast_column(column, ds.Image(decode=False))  # metadata only: we decode the bytes ourselves
        self.data, self.column, self.split, self.where = data, column, split, where
        self.ids = [f"{split}/{i}" for i in range(len(data))]
        self._fingerprint: Optional[str] = None

    def load(self, i: int) -> Image.Image:
        name = f"{self.where} [{self.split}] row {i}"
        value = self.data[int(i)][self.column]
        if isinstance(value, dict):
            raw, path = value.get("bytes"), value.get("path")
            if raw is None and path:
                return decode_image(path, f"{name} ({path})")
            value = raw
        if not isinstance(value, (bytes, bytearray)):
            raise UserError(f"cannot read image {name}: column {self.column!r} holds {type(value).__name__}, not image bytes")
        return decode_image(io.BytesIO(value), name)

    def fingerprint(self) -> str:
        """sha256 of the split's Arrow files (name, size, first and last 4 KiB), the column and the row count."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"hf\0{self.split}\0{self.column}\0{len(self.ids)}\n".encode())
            files = [f["filename"] for f in self.data.cache_files]
            for f in files:
                h.update(f"{os.path.basename(f)}\0{content_sample_digest(Path(f))}\n".encode())
            if not files:  # an in-memory dataset: datasets' own content fingerprint
                h.update(self.data._fingerprint.encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def _labelled(data: Any, split: str, opts: dict, where: str, known: Optional[list[str]] = None) -> LabeledSet:
    ds = _datasets()
    here = f"{where} [{split}]"
    features = dict(data.features)
    image = _pick(features, ds.Image, opts.get("image"), "image", here)
    label = _pick(features, ds.ClassLabel, opts.get("label"), "label", here)
    y, classes = column_labels(data, label, here, known)
    return LabeledSet(HFSource(data, image, split, where), y, classes, y.copy())


@DATASETS.register(NAME)
def hf_dataset(path: Optional[str]) -> DataSplits:
    """A Hugging Face ``datasets`` dataset (local save_to_disk / Parquet / Arrow, or the Hub)."""
    path, opts = spec_options(path, NAME, OPTIONS)
    if not path:
        raise UserError(f"dataset 'hf' needs a folder or Hub id: {USAGE}")
    target, split = split_target(path)
    splits, where = open_splits(target)
    train_name = split or ("train" if "train" in splits or len(splits) != 1 else next(iter(splits)))
    if train_name not in splits:
        raise UserError(f"hf: {target} has no split {train_name!r}; splits: {', '.join(splits)} "
                        f"(pick one with hf:{target}:SPLIT)")
    test_name = opts.get("test") or next((s for s in TEST_SPLITS if s in splits and s != train_name), None)
    if test_name is not None and test_name not in splits:
        raise UserError(f"hf: {target} has no split {test_name!r} (test=); splits: {', '.join(splits)}")
    train = _labelled(splits[train_name], train_name, opts, target)
    test = _labelled(splits[test_name], test_name, opts, target, train.classes) if test_name else None
    if test is not None and test.classes != train.classes:
        raise UserError(f"hf: {target}: splits {train_name} and {test_name} have different classes")
    info = {"dataset": NAME, "source": where, "layout": "hf", "train_split": train_name, "test_split": test_name,
            "image_column": train.source.column}
    name = Path(target).name or target
    return DataSplits(train, test, name=name, info=info)
