"""Named datasets and image trees, resolved from a ``--data`` spec. Nothing downloads.

A spec is a path (a directory or ``.zip`` laid out as ``<class>/<file>``,
optionally under ``train/`` and ``test/``), or ``name`` / ``name:path`` for a
registered dataset (``cifar10``, ``cifar100``, ``fashion-mnist``, ``demo``,
``folder``, and the official-layout readers of :mod:`noisyft.data.readers`). Each factory takes the optional path and returns
:class:`DataSplits` whose sets carry the dataset's labels as both ``labels``
and ``true_labels``; a test set keeps its own class list until
:func:`noisyft.data.load_data` aligns it with the training classes.
"""
from __future__ import annotations

import gzip
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from noisyft.data.base import DataSplits, ImageSource, LabeledSet
from noisyft.data.cifar100 import FINE_CLASSES
from noisyft.data.safe_pickle import UnsafePickle, load_data_pickle
from noisyft.data.sources import ArraySource, FolderSource, ZipSource, is_image_name
from noisyft.errors import UserError
from noisyft.registry import Registry

log = logging.getLogger("noisyft")

DATASETS: Registry[Callable[[Optional[str]], DataSplits]] = Registry("dataset")

TRAIN_DIR = "train"
TEST_DIRS = ("test", "val")  # first one present is the test split
DEMO_ZIP = Path(__file__).resolve().parent.parent / "assets" / "cifar10_demo.zip"


# --------------------------------------------------------------------------- trees


def _skip(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _unsafe_member(name: str) -> bool:
    """An absolute path, a drive letter or a ``..`` part: a zip-slip name that would escape the archive's root."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def zip_members(root: Path) -> list[str]:
    """File members of the zip ``root``; UserError naming the first member with an unsafe path.

    Such names (``/abs/x.png``, ``../x.png``) never come from zipping a folder
    normally; read as they are they would make a class named ``''`` or be
    skipped, so the archive is refused rather than silently misread.
    """
    try:
        with zipfile.ZipFile(root) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot open zip {root}: {e}") from None
    bad = next((n for n in names if _unsafe_member(n)), None)
    if bad is not None:
        raise UserError(f"zip {root} holds member {bad!r} with an absolute or '..' path (unsafe, zip-slip): "
                        f"repack it with paths relative to the archive root")
    return names


def walk_files(root: Path) -> list[str]:
    """Posix paths (relative to ``root``) of the files under the directory ``root``, hidden folders skipped.

    Symlinked folders are followed (a dataset assembled from links is read as
    it looks); a folder reached twice (a link loop, or two links to one
    folder) is read once, with a warning naming the skipped path.
    """
    names, seen = [], set()
    for d, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(d)
        if (st.st_dev, st.st_ino) in seen:
            log.warning("skipping %s: it is a folder already read (a symlink loop or a second link to it)", d)
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(x for x in dirs if not _skip(x))
        rel = Path(d).relative_to(root)
        names += [(rel / f).as_posix() for f in files]
    return names


def list_images(root: Path) -> list[str]:
    """Sorted posix names of image files in a directory (relative) or zip (members)."""
    if root.is_file() and zipfile.is_zipfile(root):
        names = zip_members(root)
    elif root.is_dir():
        names = walk_files(root)
    else:
        raise UserError(f"data path {root} is neither a directory nor a zip file")
    return sorted(n for n in names if is_image_name(n) and not any(_skip(p) for p in n.split("/")))


@dataclass
class TreeLayout:
    """Where the splits of an image tree start: ``bases`` maps split → name prefix."""

    bases: dict[str, str]
    ignored: list[str] = field(default_factory=list)


def tree_layout(names: list[str]) -> TreeLayout:
    """Find the split folders, after stripping one folder that holds everything.

    The common top folder is stripped only if it has subfolders (``cifar/train/
    cat/1.jpg``, ``pets/cat/1.jpg``); ``dog/1.jpg`` stays a one-class tree.

    ``train/`` (+ ``test/`` or ``val/``) at the top make a split layout;
    otherwise the whole tree is the training split.
    """
    lead = ""
    firsts = {n.split("/", 1)[0] for n in names}
    nested = any(n.count("/") >= 2 for n in names)  # else the one folder is a class
    if len(firsts) == 1 and all("/" in n for n in names) and nested and firsts != {TRAIN_DIR}:
        lead = firsts.pop() + "/"
    tops = {n[len(lead):].split("/", 1)[0] for n in names if "/" in n[len(lead):]}
    test = next((t for t in TEST_DIRS if t in tops), None)
    if TRAIN_DIR not in tops or not tops <= {TRAIN_DIR, *TEST_DIRS}:
        return TreeLayout({"train": lead})
    bases = {"train": f"{lead}{TRAIN_DIR}/"}
    if test:
        bases["test"] = f"{lead}{test}/"
    ignored = [n for n in names if not any(n.startswith(b) for b in bases.values())]
    return TreeLayout(bases, ignored)


def class_labels(names: list[str], base: str) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """Names under ``base`` → (ids, labels, classes, ignored) from ``<class>/<file>`` folders.

    Files directly in ``base`` are ignored when class folders exist; with no
    class folders at all (a flat tree) every file is kept with label -1.
    """
    under = [n for n in names if n.startswith(base)]
    rel = [n[len(base):] for n in under]
    classes = sorted({r.split("/", 1)[0] for r in rel if "/" in r})
    if not classes:
        return under, np.full(len(under), -1, dtype=np.int64), [], []
    index = {c: k for k, c in enumerate(classes)}
    ids = [n for n, r in zip(under, rel) if "/" in r]
    labels = np.array([index[r.split("/", 1)[0]] for r in rel if "/" in r], dtype=np.int64)
    return ids, labels, classes, [n for n, r in zip(under, rel) if "/" not in r]


def _make_source(root: Path, ids: list[str]) -> ImageSource:
    return FolderSource(root, ids) if root.is_dir() else ZipSource(root, ids)


def read_tree(root: Path) -> tuple[dict[str, LabeledSet], dict]:
    """An image tree (directory or zip) → labelled splits by name, plus info."""
    if not root.exists():
        raise UserError(f"data path not found: {root}")
    names = list_images(root)
    if not names:
        raise UserError(f"no images found in {root} (looked for .jpg .jpeg .png .bmp .gif .webp .tif .tiff files)")
    layout = tree_layout(names)
    sets, ignored = {}, list(layout.ignored)
    for split, base in layout.bases.items():
        ids, labels, classes, skipped = class_labels(names, base)
        ignored += skipped
        if ids:
            true = labels.copy() if classes else None
            sets[split] = LabeledSet(_make_source(root, ids), labels, classes, true)
    if "train" not in sets:
        raise UserError(f"no training images found in {root}")
    info = {"source": str(root), "layout": "train/test" if len(layout.bases) > 1 else "single tree"}
    if ignored:
        info["ignored_images"] = len(ignored)
    return sets, info


@DATASETS.register("folder")
def folder_dataset(path: Optional[str]) -> DataSplits:
    """A directory or zip of ``[train|test/]<class>/<file>`` images (or flat + a labels CSV)."""
    if not path:
        raise UserError("dataset 'folder' needs a path: folder:/path/to/images (a directory or .zip)")
    root = Path(path).expanduser()
    sets, info = read_tree(root)
    name = root.resolve().name
    name = name[:-4] if name.lower().endswith(".zip") else name
    return DataSplits(sets["train"], sets.get("test"), name=name, info={"dataset": "folder", **info})


@DATASETS.register("demo")
def demo_dataset(path: Optional[str]) -> DataSplits:
    """The small CIFAR-10 sample shipped with noisyft (a train/test zip tree)."""
    root = Path(path).expanduser() if path else DEMO_ZIP
    if not root.exists():
        raise UserError(f"demo data not found at {root}: the noisyft install is incomplete (reinstall noisyft)")
    sets, info = read_tree(root)
    return DataSplits(sets["train"], sets.get("test"), name="demo", info={"dataset": "demo", **info})


# --------------------------------------------------------------------------- CIFAR

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class _Cifar:
    title: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


_CIFAR10 = _Cifar("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                  tuple(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "batches.meta",
                  b"labels", b"label_names")
_CIFAR100 = _Cifar("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), "test", "meta",
                   b"fine_labels", b"fine_label_names")


def _cifar_location(spec: _Cifar, path: Optional[str], name: str) -> Path:
    """The batches folder or .tar.gz: ``path``, ``path/<folder>``, or ./<folder> by default."""
    looked = [Path(path).expanduser()] if path else [Path.cwd() / spec.folder]
    if path:
        looked.append(looked[0] / spec.folder)
    for p in looked:
        if (p.is_file() and tarfile.is_tarfile(p)) or (p / spec.train[0]).is_file():
            return p
    where = " or ".join(str(p) for p in looked)
    raise UserError(f"{spec.title} batches not found in {where}: download {spec.archive} from "
                    f"https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass "
                    f"--data {name}:/path/to/{spec.folder}")


def _read_cifar_files(loc: Path, spec: _Cifar) -> dict[str, bytes]:
    """Bytes of the batch files (and meta, if present) from a folder or, in one pass, a tar."""
    wanted = {*spec.train, spec.test, spec.meta}
    if loc.is_dir():
        return {f: (loc / f).read_bytes() for f in wanted if (loc / f).is_file()}
    out = {}
    try:
        with tarfile.open(loc) as tf:
            for m in tf:
                if m.isfile() and Path(m.name).name in wanted:
                    out[Path(m.name).name] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read {loc}: {e}") from None
    return out


def _unpickle(files: dict[str, bytes], f: str, loc: Path, spec: _Cifar) -> dict:
    if f not in files:
        raise UserError(f"{spec.title} file {f} missing in {loc}: re-extract {spec.archive}")
    try:  # the official CIFAR format is pickle: read with an unpickler that admits data only (no code)
        batch = load_data_pickle(files[f], encoding="bytes")
    except UnsafePickle as e:
        raise UserError(f"refusing to read {spec.title} file {f} in {loc}: it is not a plain CIFAR batch (it names "
                        f"{e}, which could run code); use the files from {spec.archive}") from None
    except Exception as e:
        raise UserError(f"cannot read {spec.title} file {f} in {loc}: {e}") from None
    if not isinstance(batch, dict):
        raise UserError(f"{spec.title} file {f} in {loc} holds a {type(batch).__name__}, not a batch dict: "
                        f"is it the python version?")
    return batch


def _cifar_split(files: dict[str, bytes], names: tuple[str, ...], loc: Path, spec: _Cifar):
    """Concatenated batches → (N×32×32×3 uint8 images, int64 labels)."""
    parts = [_unpickle(files, f, loc, spec) for f in names]
    try:
        data = np.concatenate([np.asarray(p[b"data"], dtype=np.uint8) for p in parts])
        labels = np.concatenate([np.asarray(p[spec.label_key], dtype=np.int64) for p in parts])
    except KeyError as e:
        raise UserError(f"{spec.title} batch in {loc} lacks key {e}: is it the python version?") from None
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _cifar_classes(files: dict[str, bytes], loc: Path, spec: _Cifar) -> list[str]:
    if spec.meta not in files:  # the names are fixed; the meta file only repeats them
        return list(CIFAR10_CLASSES if spec is _CIFAR10 else FINE_CLASSES)
    names = _unpickle(files, spec.meta, loc, spec).get(spec.names_key)
    if names is None:
        raise UserError(f"{spec.title} {spec.meta} in {loc} lacks {spec.names_key.decode()}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(spec: _Cifar, path: Optional[str], name: str) -> DataSplits:
    """CIFAR python batches → array-backed splits with true labels."""
    loc = _cifar_location(spec, path, name)
    files = _read_cifar_files(loc, spec)
    classes = _cifar_classes(files, loc, spec)
    sets = []
    for names in (spec.train, (spec.test,)):
        x, y = _cifar_split(files, names, loc, spec)
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise UserError(f"{spec.title} labels in {loc} fall outside the {len(classes)} classes")
        sets.append(LabeledSet(ArraySource(x), y, classes, y.copy()))
    return DataSplits(sets[0], sets[1], name=name, info={"dataset": name, "source": str(loc)})


@DATASETS.register("cifar10")
def cifar10_dataset(path: Optional[str]) -> DataSplits:
    """CIFAR-10 from ``cifar-10-batches-py`` (or the .tar.gz); default: ./cifar-10-batches-py."""
    return load_cifar(_CIFAR10, path, "cifar10")


@DATASETS.register("cifar100")
def cifar100_dataset(path: Optional[str]) -> DataSplits:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (or the .tar.gz)."""
    return load_cifar(_CIFAR100, path, "cifar100")


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes → ndarray of its shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"{path}: header says shape {dims} but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _idx_path(root: Path, stem: str) -> Path:
    for p in (root / f"{stem}.gz", root / stem):
        if p.is_file():
            return p
    raise UserError(f"Fashion-MNIST file {stem}.gz not found in {root}: install the Debian package "
                    f"dataset-fashion-mnist (puts it in {FASHION_MNIST_DIR}) or pass "
                    f"--data fashion-mnist:/path/to/folder-with-idx-files")


@DATASETS.register("fashion-mnist")
def fashion_mnist_dataset(path: Optional[str]) -> DataSplits:
    """Fashion-MNIST from its four IDX files (grey 28×28, shown to models as RGB)."""
    root = Path(path or FASHION_MNIST_DIR).expanduser()
    sets = []
    for split, (img, lab) in _FMNIST_FILES.items():
        x, y = read_idx(_idx_path(root, img)), read_idx(_idx_path(root, lab)).astype(np.int64)
        if len(x) != len(y) or x.ndim != 3:
            raise UserError(f"Fashion-MNIST {split} files in {root} disagree: images {x.shape}, labels {y.shape}")
        sets.append(LabeledSet(ArraySource(x), y, list(FASHION_MNIST_CLASSES), y.copy()))
    info = {"dataset": "fashion-mnist", "source": str(root)}
    return DataSplits(sets[0], sets[1], name="fashion-mnist", info=info)


# --------------------------------------------------------------------------- specs


def open_dataset(spec: str) -> DataSplits:
    """Resolve a ``--data`` spec: ``name``, ``name:path``, or a path (a directory or .zip).

    A registered name wins over a folder of the same name in the current
    directory; write ``./demo`` to mean the folder.
    """
    name, _, path = spec.partition(":")
    if name in DATASETS:
        return DATASETS.get(name)(path or None)
    if Path(spec).expanduser().exists():
        return folder_dataset(spec)
    if not spec.strip():
        raise UserError("empty data spec: give a directory, a .zip, or a dataset name")
    if "/" in spec or "\\" in spec or "." in spec:
        raise UserError(f"data path not found: {spec}")
    return DATASETS.get(name)(path or None)
