"""CIFAR-10N / CIFAR-100N: real human labels of the CIFAR training images, as the training labels.

``--labels cifar10n:KIND:FILE`` with ``--data cifar10:PATH`` (KIND: ``aggre``, ``worse``,
``random1``, ``random2``, ``random3``, or ``clean``), and ``--labels cifar100n:noisy:FILE`` with
``--data cifar100:PATH``. FILE is the published ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``
(github.com/UCSC-REAL/cifar-10-100n, folder ``data/``): a ``torch.save`` of a dict of numpy
arrays, one label per training image in the order of the CIFAR python batches. The file's
``clean_label`` (checked against the CIFAR batches) becomes the true labels, so precision and
recall of the detected label issues are reported.

Reading never runs code from the file: the pickle inside the torch file is read with the
restricted unpickler of :mod:`noisyft.data.safe_pickle`, which admits numpy arrays and plain
containers only. (``torch.load(weights_only=True)`` admits numpy arrays only with allow-listed
globals, and the published files, written with numpy 1.x, name ``numpy.core.multiarray``,
which numpy 2 keeps only as a shim.) A file that holds tensors instead is read with
``torch.load(weights_only=True)``, which admits tensors and plain containers and nothing that
runs code.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisyft.data.base import LabeledSet
from noisyft.data.safe_pickle import PersistentRef, UnsafePickle, load_data_pickle
from noisyft.errors import UserError

PUBLISHED = "CIFAR-N label files are published at github.com/UCSC-REAL/cifar-10-100n (folder data/)"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (pre-zip) torch.save file


@dataclass(frozen=True)
class HumanLabels:
    """One CIFAR-N label set: which data it labels and which key of the file holds each kind."""

    dataset: str
    file: str
    num_classes: int
    kinds: dict[str, str]


HUMAN_LABELS = {
    "cifar10n": HumanLabels("cifar10", "CIFAR-10_human.pt", 10, {
        "aggre": "aggre_label", "worse": "worse_label", "random1": "random_label1", "random2": "random_label2",
        "random3": "random_label3", "clean": "clean_label"}),
    "cifar100n": HumanLabels("cifar100", "CIFAR-100_human.pt", 100, {"noisy": "noisy_label", "clean": "clean_label"}),
}


def is_human_labels(spec: str) -> bool:
    """True when a ``--labels`` value names CIFAR-N labels (``cifar10n:...``) rather than a CSV file."""
    return spec.partition(":")[0] in HUMAN_LABELS and ":" in spec


def _usage(name: str) -> str:
    h = HUMAN_LABELS[name]
    return f"--labels {name}:KIND:/path/to/{h.file} with KIND one of {', '.join(h.kinds)}"


def parse_spec(spec: str) -> tuple[str, str, Path]:
    """``cifar10n:worse:FILE`` → (``cifar10n``, ``worse``, FILE); a Windows ``C:\\`` in FILE is kept whole."""
    name, _, rest = spec.partition(":")
    kind, _, file = rest.partition(":")
    h = HUMAN_LABELS[name]
    if kind.endswith("_label") or kind.startswith("random_label"):  # the file's own key names are accepted too
        kind = next((k for k, key in h.kinds.items() if key == kind), kind)
    if kind not in h.kinds:
        hint = " (the coarse labels name 20 superclasses, not cifar100's 100 classes)" if "coarse" in kind else ""
        raise UserError(f"--labels {spec}: unknown {name} label kind {kind!r}{hint}; use {_usage(name)}")
    if not file:
        raise UserError(f"--labels {spec}: no label file given; use {_usage(name)}")
    return name, kind, Path(file).expanduser()


def _refuse(path: Path, why: str) -> UserError:
    return UserError(f"refusing to read CIFAR-N label file {path}: {why}; use the file as published ({PUBLISHED})")


def _unpickle(data: bytes | io.BytesIO):
    """One pickle from ``data`` (bytes, or the next one of a stream), admitting plain data only."""
    return load_data_pickle(data, encoding="latin1")


def _torch_load_tensors(path: Path):
    """A torch file holding tensors: ``torch.load(weights_only=True)`` (tensors and containers only, no code)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _refuse(path, f"torch's weights-only loader refused it ({first[:200]})") from None


def read_label_file(path: Path) -> dict:
    """The dict saved in a CIFAR-N ``.pt`` file (zip or legacy torch format, or a plain pickle), read as data."""
    if not path.is_file():
        raise UserError(f"CIFAR-N label file {path} not found; {PUBLISHED}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = next((n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if pkl is None:
                    raise _refuse(path, "it is a zip without the data.pkl of a torch.save file")
                data = zf.read(pkl)
            obj = _unpickle(data)
        else:
            f = io.BytesIO(path.read_bytes())
            obj = _unpickle(f)
            if isinstance(obj, int) and obj == TORCH_MAGIC:  # legacy torch.save: magic, protocol, sys info, object
                _unpickle(f), _unpickle(f)
                obj = _unpickle(f)
    except PersistentRef:  # tensor storages: torch's weights-only loader reads tensors without running code
        obj = _torch_load_tensors(path)
    except UnsafePickle as e:
        if not str(e).startswith("torch."):
            raise _refuse(path, f"it names {e}, which is not plain data and could run code") from None
        obj = _torch_load_tensors(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or garbled file raises many types
        raise UserError(f"cannot read CIFAR-N label file {path}: {str(e) or type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise _refuse(path, f"it holds a {type(obj).__name__}, not the dict of label arrays")
    return obj


def _labels_array(obj: dict, key: str, path: Path, n: int, num_classes: int) -> np.ndarray:
    if key not in obj:
        have = ", ".join(sorted(map(str, obj)))
        raise UserError(f"CIFAR-N label file {path} has no {key!r} (it holds: {have}); is it the right file?")
    try:
        y = np.asarray(obj[key].numpy() if hasattr(obj[key], "numpy") else obj[key])
    except Exception:  # noqa: BLE001 - anything odd in the file is a user error
        raise UserError(f"CIFAR-N label file {path}: {key!r} is not an array of labels") from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"CIFAR-N label file {path}: {key!r} is a {y.dtype} array of shape {y.shape}, "
                        f"expected one integer label per training image")
    if len(y) != n:
        raise UserError(f"CIFAR-N label file {path}: {key!r} holds {len(y)} labels but the training set has {n} images; "
                        f"the labels are for the full training set of the CIFAR python batches, in their order")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        i = int(np.flatnonzero((y < 0) | (y >= num_classes))[0])
        raise UserError(f"CIFAR-N label file {path}: {key}[{i}] = {int(y[i])} is outside 0..{num_classes - 1}")
    return y.astype(np.int64)


def apply_human_labels(spec: str, train: LabeledSet, info: dict) -> LabeledSet:
    """``train`` (the CIFAR training set as read) with the CIFAR-N labels of ``spec`` as its given labels."""
    name, kind, path = parse_spec(spec)
    h = HUMAN_LABELS[name]
    if info.get("dataset") != h.dataset:
        raise UserError(f"--labels {spec}: {name} labels belong to --data {h.dataset}:PATH, "
                        f"not {info.get('spec', info.get('dataset', 'this data'))}")
    obj = read_label_file(path)
    given = _labels_array(obj, h.kinds[kind], path, len(train), h.num_classes)
    true = train.labels
    if "clean_label" in obj:
        clean = _labels_array(obj, "clean_label", path, len(train), h.num_classes)
        differ = np.flatnonzero(clean != train.labels)
        if len(differ):
            i = int(differ[0])
            raise UserError(f"CIFAR-N label file {path}: clean_label disagrees with the {h.dataset} batches at "
                            f"{len(differ)} of {len(train)} images (first: image {i}, {int(clean[i])} vs "
                            f"{int(train.labels[i])}); the file is for another copy or order of {h.dataset}")
        true = clean
    info.update(labels_file=str(path), human_labels=f"{name}:{kind}", human_label_noise=float(np.mean(given != true)))
    return LabeledSet(train.source, given, train.classes, true)
