"""WebDataset tar shards: ``wds:PATTERN[?test=PATTERN]``, read at random through an index of member offsets.

``PATTERN`` names uncompressed ``.tar`` shards with brace expansion (``data-{000000..000099}.tar``,
``{train,extra}.tar``) or a glob (``shards/*.tar``). A sample is the members sharing a key (the
member name up to the first dot of its file name, as WebDataset groups them): one image
(``.jpg`` ``.jpeg`` ``.png`` ``.webp`` …) and its label, a ``.cls`` member (the class id as text)
or a ``.json`` member with a ``label`` (or ``cls``, ``class``, ``target``) field, an id or a
class name. Class names come from ``classes.txt`` (line k = id k-1) or ``classes.json`` (a list,
or ``{"name": id}``) next to the first shard, else they are the ids themselves.

Each shard is scanned once (``tarfile``: header by header, no image decoded) into an index of
(key, image offset, size, label) kept in ``$NOISYFT_CACHE/wds-index/``, keyed by the shard's
absolute path, size and modification time; later runs read the index, then seek straight to
each image. Sample ids are ``SHARD/KEY``.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from noisyft.atomic import atomic_path
from noisyft.data.base import DataSplits, ImageSource, LabeledSet
from noisyft.data.datasets import DATASETS
from noisyft.data.readers.common import cache_root, spec_options
from noisyft.data.sources import IMAGE_EXTENSIONS, content_sample_digest, decode_image
from noisyft.errors import UserError

NAME = "wds"
USAGE = "--data 'wds:/path/data-{000000..000099}.tar[?test=/path/test-{000..009}.tar]'"
OPTIONS = {"test": "a shard pattern for the test set"}
IMAGE_EXTS = frozenset(e[1:] for e in IMAGE_EXTENSIONS) | {"ppm"}
LABEL_FIELDS = ("label", "cls", "class", "target")
INDEX_VERSION = 1
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a{1..3}b`` → a1b a2b a3b (zero padding kept: ``{000..002}``); ``{x,y}`` → both; nested groups in order."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        a, b = int(rng.group(1)), int(rng.group(2))
        width = len(rng.group(1)) if rng.group(1).startswith("0") else 0
        step = 1 if b >= a else -1
        items = [str(k).zfill(width) for k in range(a, b + step, step)]
    else:
        items = body.split(",")
    return [x for item in items for x in expand_braces(head + item + tail)]


def shard_paths(pattern: str) -> list[Path]:
    """The shards a pattern names, each checked to exist and be an uncompressed tar."""
    pattern = os.path.expanduser(pattern)
    names = expand_braces(pattern)
    if any(ch in pattern for ch in "*?["):
        names = sorted(p for n in names for p in glob.glob(n))
        if not names:
            raise UserError(f"wds: no shard matches {pattern}; {USAGE}")
    paths = [Path(n) for n in names]
    for p in paths:
        if not p.is_file():
            raise UserError(f"wds: shard {p} not found (pattern {pattern} names {len(paths)} shard(s)); {USAGE}")
        if p.name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst")):
            raise UserError(f"wds: shard {p} is compressed; random access needs plain .tar shards (decompress it)")
    return paths


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's grouping: ``dir/abc.seg.jpg`` → key ``dir/abc``, extension ``seg.jpg``."""
    folder, _, fname = name.rpartition("/")
    stem, _, ext = fname.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _label_text(shard: Path, member: str, ext: str, raw: bytes) -> str:
    """The label a ``.cls`` / ``.json`` member holds, as text (an id or a class name)."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{shard}: member {member}: label is not UTF-8 text") from None
    if ext == "cls":
        if not text:
            raise UserError(f"{shard}: member {member}: empty label")
        return text
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise UserError(f"{shard}: member {member}: not valid JSON ({e})") from None
    value = obj if isinstance(obj, (int, str)) else next(
        (obj[k] for k in LABEL_FIELDS if isinstance(obj, dict) and k in obj), None)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{shard}: member {member}: no integer or string field {'/'.join(LABEL_FIELDS)} holds the label")
    return str(value)


def scan_shard(shard: Path) -> dict[str, np.ndarray]:
    """One pass over a shard's headers: per sample its key, image offset and size, and label text."""
    samples: dict[str, list] = {}  # key → [offset, size, label, first member name]
    try:
        with tarfile.open(shard, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, ext = _split_member(m.name)
                row = samples.setdefault(key, [-1, 0, None, m.name])
                last = ext.rpartition(".")[2]
                if last in IMAGE_EXTS and ext == last:
                    if row[0] >= 0:
                        raise UserError(f"{shard}: sample {key} has two images (second: member {m.name})")
                    row[0], row[1] = m.offset_data, m.size
                elif ext in ("cls", "json"):
                    if ext == "cls" or row[2] is None:  # .cls wins over .json
                        row[2] = _label_text(shard, m.name, ext, tf.extractfile(m).read())
    except tarfile.ReadError as e:
        raise UserError(f"wds: cannot read shard {shard}: {e} (is it a plain .tar?)") from None
    except (OSError, EOFError) as e:
        raise UserError(f"wds: cannot read shard {shard}: {e}") from None
    for key, (offset, _, label, member) in samples.items():
        if offset < 0:
            raise UserError(f"{shard}: sample {key} (member {member}) has no image member "
                            f"({', '.join(sorted(IMAGE_EXTS))})")
        if label is None:
            raise UserError(f"{shard}: sample {key} has no .cls or .json label member")
    rows = list(samples.items())
    return {"keys": np.array([k for k, _ in rows], dtype=str), "offsets": np.array([r[0] for _, r in rows], np.int64),
            "sizes": np.array([r[1] for _, r in rows], np.int64), "labels": np.array([r[2] for _, r in rows], dtype=str)}


def index_file(shard: Path) -> Path:
    """Where the shard's index is cached: keyed by its absolute path, size and modification time."""
    st = shard.stat()
    key = hashlib.sha256(f"v{INDEX_VERSION}\0{shard.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return cache_root() / "wds-index" / f"{key[:24]}.npz"


def shard_index(shard: Path) -> dict[str, np.ndarray]:
    """The shard's index: read from the cache, else built by :func:`scan_shard` and cached (atomically)."""
    path = index_file(shard)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in ("keys", "offsets", "sizes", "labels")}
        except Exception:  # damaged cache entry: rebuild it
            pass
    index = scan_shard(shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **index)
    return index


def read_classes(folder: Path) -> Optional[list[str]]:
    """Class names from ``classes.txt`` or ``classes.json`` in ``folder``; None when neither is there."""
    txt, js = folder / "classes.txt", folder / "classes.json"
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(set(names)) != len(names):
            raise UserError(f"wds: {txt} names a class twice")
        return names
    if js.is_file():
        try:
            obj = json.loads(js.read_text(encoding="utf-8"))
        except ValueError as e:
            raise UserError(f"wds: {js} is not valid JSON ({e})") from None
        if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
            return obj
        if isinstance(obj, dict) and all(isinstance(v, int) for v in obj.values()):
            if sorted(obj.values()) != list(range(len(obj))):
                raise UserError(f"wds: {js}: class ids must be 0..{len(obj) - 1}")
            return [n for n, _ in sorted(obj.items(), key=lambda kv: kv[1])]
        raise UserError(f"wds: {js} must hold a list of class names or {{name: id}}")
    return None


class WdsSource(ImageSource):
    """Images inside tar shards, read by seeking to their offsets; files open lazily per process."""

    def __init__(self, shards: list[Path], shard_of: np.ndarray, offsets: np.ndarray, sizes: np.ndarray,
                 ids: list[str]):
        self.shards, self.shard_of, self.offsets, self.sizes, self.ids = shards, shard_of, offsets, sizes, ids
        self._files: dict[int, object] = {}
        self._pid = os.getpid()
        self._fingerprint: Optional[str] = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def _file(self, s: int):
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if s not in self._files:
            try:
                self._files[s] = open(self.shards[s], "rb")
            except OSError as e:
                raise UserError(f"cannot open shard {self.shards[s]}: {e.strerror or e}") from None
        return self._files[s]

    def load(self, i: int) -> Image.Image:
        s = int(self.shard_of[i])
        name = f"{self.shards[s]}:{self.ids[i]}"
        f = self._file(s)
        f.seek(int(self.offsets[i]))
        data = f.read(int(self.sizes[i]))
        if len(data) != int(self.sizes[i]):
            raise UserError(f"cannot read image {name}: the shard is shorter than its index (changed? delete "
                            f"{cache_root() / 'wds-index'})")
        return decode_image(io.BytesIO(data), name)

    def fingerprint(self) -> str:
        """sha256 of each shard's name and content sample, and of every image's offset and size."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"wds\0")
            for p in self.shards:
                h.update(f"{p.name}\0{content_sample_digest(p)}\n".encode())
            for a in (self.shard_of, self.offsets, self.sizes):
                h.update(np.ascontiguousarray(a).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def label_ids(texts: np.ndarray, classes: Optional[list[str]], where: list[tuple[Path, str]],
              folder: Path) -> tuple[np.ndarray, list[str]]:
    """Label texts → ids and the class names; an unknown id or name names its shard and sample."""
    index = {c: k for k, c in enumerate(classes)} if classes is not None else {}
    ys = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts.tolist()):
        if t in index:
            ys[i] = index[t]
            continue
        try:
            ys[i] = int(t)
        except ValueError:
            shard, key = where[i]
            raise UserError(f"{shard}: sample {key}: label {t!r} is not a class id"
                            + ("" if classes is None else f" nor a name in {folder}/classes.*")) from None
    if classes is None:
        classes = [str(k) for k in range(int(ys.max(initial=-1)) + 1)]
    bad = np.flatnonzero((ys < 0) | (ys >= len(classes)))
    if len(bad):
        shard, key = where[int(bad[0])]
        raise UserError(f"{shard}: sample {key}: unknown class id {int(ys[bad[0]])} (ids are 0..{len(classes) - 1})")
    return ys, classes


def read_shards(pattern: str, classes: Optional[list[str]]) -> LabeledSet:
    """Every sample of the shards ``pattern`` names, as a labelled set."""
    shards = shard_paths(pattern)
    parts = [shard_index(p) for p in shards]
    counts = [len(x["keys"]) for x in parts]
    if sum(counts) == 0:
        raise UserError(f"wds: the shards of {pattern} hold no samples")
    shard_of = np.repeat(np.arange(len(shards), dtype=np.int32), counts)
    keys = [k for x in parts for k in x["keys"].tolist()]
    texts = np.concatenate([x["labels"] for x in parts])
    folder = shards[0].parent
    where = [(shards[s], k) for s, k in zip(shard_of.tolist(), keys)]
    y, names = label_ids(texts, classes if classes is not None else read_classes(folder), where, folder)
    ids = [f"{shards[s].name}/{k}" for s, k in zip(shard_of.tolist(), keys)]
    source = WdsSource(shards, shard_of, np.concatenate([x["offsets"] for x in parts]),
                       np.concatenate([x["sizes"] for x in parts]), ids)
    return LabeledSet(source, y, names, y.copy())


@DATASETS.register(NAME)
def wds_dataset(path: Optional[str]) -> DataSplits:
    """WebDataset tar shards (a brace or glob pattern); the test set from ``?test=PATTERN``."""
    pattern, opts = spec_options(path, NAME, OPTIONS)
    if not pattern:
        raise UserError(f"dataset 'wds' needs a shard pattern: {USAGE}")
    train = read_shards(pattern, None)
    test = read_shards(opts["test"], train.classes) if "test" in opts else None
    info = {"dataset": NAME, "source": pattern, "layout": "webdataset", "shards": len(train.source.shards)}
    return DataSplits(train, test, name=train.source.shards[0].parent.name or NAME, info=info)
