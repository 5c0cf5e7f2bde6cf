"""Frozen-backbone features, computed once and cached on disk.

**Key.** A cache entry is keyed by everything that changes the numbers: the
backbone and its weights, the images' content fingerprint and order
(:meth:`ImageSource.fingerprint`: for a folder, each file's size and a hash of
its first and last 4 KiB, so whole files up to 8 KiB; for a zip, each member's
CRC-32 and size; for arrays, every byte), the preprocessing and resolution, and
this module's format version (bumped whenever decoding changes pixels).

**Writing.** One process at a time writes an entry: it holds an exclusive
``flock`` on ``<entry>/.lock`` while extracting, and a second process
extracting the same images waits for it, then reads the finished entry. Features
are written in shards (each renamed into place when complete) so a killed
extraction resumes where it stopped; then ``features.npy`` appears by an atomic
rename, and ``done.json`` (shape, byte size and CRC-32 of ``features.npy``) is
written *last*. An entry without ``done.json`` is unfinished and is never read.

**Reading.** A hit is checked before use: shape and byte size against
``done.json`` and the CRC-32 of the whole file (zlib, about 3.5 GB/s on one
core: ~1.5 s for 1M×1280 features once they are in the page cache, which the
training that follows reads anyway; verified once per process). A missing,
truncated or corrupt entry is rebuilt with one warning naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from noisyft.atomic import atomic_path, write_json
from noisyft.backbones.base import Backbone
from noisyft.data.base import ImageSource
from noisyft.faults import maybe_die
from noisyft.features.loader import source_features

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (one writer per cache assumed)
    fcntl = None

log = logging.getLogger("noisyft")

FORMAT_VERSION = 2  # 2: content-keyed folders, done.json with CRC, EXIF orientation and 16-bit PNG decoding
DONE_FILE = "done.json"
FEATURES_FILE = "features.npy"
_VERIFIED: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) → CRC already checked in this process


def default_cache_dir() -> Path:
    """``$NOISYFT_CACHE`` or ``~/.cache/noisyft``."""
    return Path(os.environ.get("NOISYFT_CACHE", Path.home() / ".cache" / "noisyft"))


def feature_key(backbone: Backbone, source: ImageSource) -> str:
    """The cache key: backbone + weights, image content, preprocessing, format."""
    parts = {"backbone": backbone.name, "weights": backbone.weights_id, "images": source.fingerprint(),
             "n": len(source), "preprocess": backbone.preprocess.to_dict(), "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _shard_path(entry: Path, k: int) -> Path:
    return entry / "partial" / f"part-{k:05d}.npy"


def file_crc32(path: Path, chunk: int = 16 << 20) -> str:
    """CRC-32 of a file's bytes as 8 hex digits (zlib; catches truncation and accidental corruption)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


class BadEntry(Exception):
    """A cache entry that claims to be finished but is not usable (the message says why)."""


def _remember(path: Path, crc: str) -> None:
    st = path.stat()
    _VERIFIED[(str(path), st.st_ino, st.st_size, st.st_mtime_ns)] = crc


def open_entry(entry: Path, n: int, dim: int) -> Optional[np.ndarray]:
    """A finished entry's (n, dim) features as a read-only memmap, None if unfinished; BadEntry if corrupt."""
    final = entry / FEATURES_FILE
    try:
        done = json.loads((entry / DONE_FILE).read_text())
    except FileNotFoundError:
        return None  # not finished (or killed between features.npy and done.json: rebuilt from the shards)
    except (OSError, ValueError) as e:
        raise BadEntry(f"unreadable {DONE_FILE}: {e}") from None
    if not isinstance(done, dict) or done.get("n") != n or done.get("dim") != dim:
        raise BadEntry(f"{DONE_FILE} does not describe {n}×{dim} features")
    try:
        st = final.stat()
    except FileNotFoundError:
        raise BadEntry(f"{FEATURES_FILE} is missing") from None
    if st.st_size != done.get("bytes"):
        raise BadEntry(f"{FEATURES_FILE} has {st.st_size} bytes, {DONE_FILE} says {done.get('bytes')}")
    try:
        arr = np.load(final, mmap_mode="r")
    except Exception as e:  # numpy raises several types for a damaged header
        raise BadEntry(f"{FEATURES_FILE} is unreadable: {e}") from None
    if arr.shape != (n, dim) or arr.dtype != np.float32:
        raise BadEntry(f"{FEATURES_FILE} holds {arr.dtype} {arr.shape}, expected float32 {(n, dim)}")
    key = (str(final), st.st_ino, st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) != done.get("crc32"):
        crc = file_crc32(final)
        if crc != done.get("crc32"):
            raise BadEntry(f"{FEATURES_FILE} fails its checksum (CRC-32 {crc}, {DONE_FILE} says {done.get('crc32')})")
        _VERIFIED[key] = crc
    return arr


@contextmanager
def entry_lock(entry: Path) -> Iterator[None]:
    """Hold the entry's writer lock (``flock`` on ``<entry>/.lock``), waiting for another holder if need be.

    The lock file is never deleted (deleting it would let two writers lock two
    different files); the kernel drops the lock when its holder dies.
    """
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / ".lock", "a+b") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("waiting for another process that is extracting the same features (%s)", entry)
                fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _good_shards(entry: Path, n_shards: int, rows_of, dim: int) -> set[int]:
    """Indices of finished shards whose header says the right shape; others are deleted (with a warning)."""
    good = set()
    for k in range(n_shards):
        path = _shard_path(entry, k)
        if not path.exists():
            continue
        try:
            part = np.load(path, mmap_mode="r")
            ok = part.shape == (rows_of(k), dim) and part.dtype == np.float32
        except Exception:
            ok = False
        if ok:
            good.add(k)
        else:
            log.warning("feature cache shard %s is damaged; extracting it again", path)
            path.unlink()
    return good


def _assemble(entry: Path, n_shards: int, n: int, dim: int, meta: dict) -> None:
    """Shards → ``features.npy`` (atomic rename), then ``done.json`` with size and CRC-32, then drop the shards."""
    final = entry / FEATURES_FILE
    with atomic_path(final) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        row = 0
        for k in range(n_shards):
            part = np.load(_shard_path(entry, k))
            arr[row: row + len(part)] = part
            row += len(part)
        arr.flush()
        del arr
        crc, size = file_crc32(tmp), tmp.stat().st_size
    _remember(final, crc)
    maybe_die("extract:assembled")
    write_json(entry / DONE_FILE, {**meta, "bytes": size, "crc32": crc})
    shutil.rmtree(entry / "partial", ignore_errors=True)


def entry_dir(backbone: Backbone, source: ImageSource, cache_dir: str | Path | None = None) -> Path:
    """The cache entry folder of ``backbone``'s features of ``source`` (``$NOISYFT_CACHE`` when ``cache_dir`` is None)."""
    return Path(cache_dir or default_cache_dir()) / "features" / feature_key(backbone, source)


def cached_features(backbone: Backbone, source: ImageSource, cache_dir: str | Path | None = None) -> Optional[np.ndarray]:
    """The one cache lookup: the finished, verified entry's features, or None (missing, unfinished or damaged).

    Never computes anything; :func:`extract_features` is the caller that fills a miss.
    """
    try:  # verified like any hit (size and checksum)
        return open_entry(entry_dir(backbone, source, cache_dir), len(source), backbone.num_features)
    except BadEntry:
        return None


def extract_features(backbone: Backbone, source: ImageSource, *, cache_dir: str | Path | None = None,
                     batch_size: int = 128, num_workers: int | None = None, device: str | torch.device = "cpu",
                     shard_rows: int | None = None, progress: bool = True, desc: str = "features") -> np.ndarray:
    """Features of every image of ``source`` as a read-only (N, D) float32 memmap, cached.

    A hit costs a ``np.load(mmap_mode='r')`` plus a checksum pass (once per
    process); a miss runs the backbone in eval mode over all images (resuming
    from finished shards) and stores the result. Processes sharing a cache
    wait for each other instead of writing the same entry twice.
    """
    shard_rows = shard_rows or int(os.environ.get("NOISYFT_SHARD_ROWS", 8192))
    entry = entry_dir(backbone, source, cache_dir)
    n, dim = len(source), backbone.num_features
    arr = cached_features(backbone, source, cache_dir)
    if arr is not None:
        return arr
    with entry_lock(entry):  # a damaged entry is decided under the lock: another process may be rebuilding it
        try:
            arr = open_entry(entry, n, dim)
            if arr is not None:
                return arr
        except BadEntry as e:
            log.warning("feature cache entry %s is damaged (%s); rebuilding it", entry, e)
            for name in (DONE_FILE, FEATURES_FILE):
                (entry / name).unlink(missing_ok=True)
        _extract(backbone, source, entry, shard_rows, batch_size=batch_size, num_workers=num_workers, device=device,
                 progress=progress, desc=desc)
        arr = open_entry(entry, n, dim)
    assert arr is not None
    return arr


def _extract(backbone: Backbone, source: ImageSource, entry: Path, shard_rows: int, *, batch_size, num_workers,
             device, progress, desc) -> None:
    """Run the backbone over the missing shards and assemble the entry (caller holds the entry lock)."""
    device = torch.device(device)
    backbone.eval().to(device).to(memory_format=torch.channels_last)
    n, dim = len(source), backbone.num_features
    n_shards = max(1, -(-n // shard_rows))

    def rows_of(k: int) -> int:
        return min(shard_rows, n - k * shard_rows)

    done = _good_shards(entry, n_shards, rows_of, dim)
    todo = [k for k in range(n_shards) if k not in done]
    with tqdm(total=n, initial=sum(rows_of(k) for k in done), desc=desc, unit="img", disable=not progress,
              leave=False) as bar:
        for k in todo:
            rows = np.arange(k * shard_rows, min(n, (k + 1) * shard_rows))
            part = source_features(backbone, source, rows, batch_size=batch_size, num_workers=num_workers, device=device, bar=bar)
            with atomic_path(_shard_path(entry, k)) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, part)
            maybe_die(f"extract:{k}")
    meta = {"backbone": backbone.name, "weights": backbone.weights_id, "preprocess": backbone.preprocess.to_dict(),
            "n": n, "dim": dim, "images": source.fingerprint(), "format": FORMAT_VERSION}
    _assemble(entry, n_shards, n, dim, meta)
