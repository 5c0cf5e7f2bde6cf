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
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from noisyft import dist
from noisyft.atomic import atomic_path, write_json
from noisyft.backbones.base import Backbone
from noisyft.data.base import ImageSource
from noisyft.faults import maybe_die
from noisyft.features.loader import batch_features, chunks

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (one writer per cache assumed)
    fcntl = None

log = logging.getLogger("noisyft")

FORMAT_VERSION = 3  # 2: content-keyed folders, done.json with CRC, EXIF orientation and 16-bit PNG decoding;
#                    3: eval resize by torch's antialiased uint8 kernel (data.transforms.EvalResize; was PIL)
DONE_FILE = "done.json"
FEATURES_FILE = "features.npy"
_VERIFIED: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) → CRC already checked in this process


def default_cache_dir() -> Path:
    """``$NOISYFT_CACHE`` or ``~/.cache/noisyft``."""
    return Path(os.environ.get("NOISYFT_CACHE", Path.home() / ".cache" / "noisyft"))


def feature_key(backbone: Backbone, source: ImageSource, variant: Optional[str] = None) -> str:
    """The cache key: backbone + weights, image content, preprocessing, format (+ ``variant``: ``fp32`` for
    features computed on CUDA without bf16 autocast; absent for the default, so existing keys stay)."""
    parts = {"backbone": backbone.name, "weights": backbone.weights_id, "images": source.fingerprint(),
             "n": len(source), "preprocess": backbone.preprocess.to_dict(), "format": FORMAT_VERSION}
    if variant:
        parts["variant"] = variant
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


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


def _good_shards(parts: Path, n_shards: int, rows_of, dim: int) -> set[int]:
    """Indices of finished shards (in folder ``parts``) whose header says the right shape; others are deleted
    (with a warning)."""
    good = set()
    for k in range(n_shards):
        path = parts / f"part-{k:05d}.npy"
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


def _assemble(entry: Path, parts: Path, n_shards: int, n: int, dim: int, meta: dict) -> None:
    """Shards → ``features.npy`` (atomic rename), then ``done.json`` with size and CRC-32, then drop the shards."""
    final = entry / FEATURES_FILE
    with atomic_path(final) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        row = 0
        for k in range(n_shards):
            part = np.load(parts / f"part-{k:05d}.npy")
            arr[row: row + len(part)] = part
            row += len(part)
        arr.flush()
        del arr
        crc, size = file_crc32(tmp), tmp.stat().st_size
    _remember(final, crc)
    maybe_die("extract:assembled")
    write_json(entry / DONE_FILE, {**meta, "bytes": size, "crc32": crc})
    shutil.rmtree(parts, ignore_errors=True)


def entry_dir(backbone: Backbone, source: ImageSource, cache_dir: str | Path | None = None,
              variant: Optional[str] = None) -> Path:
    """The cache entry folder of ``backbone``'s features of ``source`` (``$NOISYFT_CACHE`` when ``cache_dir`` is None)."""
    return Path(cache_dir or default_cache_dir()) / "features" / feature_key(backbone, source, variant)


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
                     shard_rows: int | None = None, progress: bool = True, desc: str = "features",
                     precision: str = "auto") -> np.ndarray:
    """Features of every image of ``source`` as a read-only (N, D) float32 memmap, cached.

    A hit costs a ``np.load(mmap_mode='r')`` plus a checksum pass (once per
    process); a miss runs the backbone in eval mode over all images (resuming
    from finished shards) and stores the result. Processes sharing a cache
    wait for each other instead of writing the same entry twice. In a data-parallel
    run (:mod:`noisyft.dist`) the ranks split the missing shards between them and
    rank 0 assembles the entry: the same file a single process writes.
    """
    shard_rows = shard_rows or int(os.environ.get("NOISYFT_SHARD_ROWS", 8192))
    variant = "fp32" if torch.device(device).type == "cuda" and precision == "fp32" else None
    entry = entry_dir(backbone, source, cache_dir, variant)
    n, dim = len(source), backbone.num_features
    run = dict(batch_size=batch_size, num_workers=num_workers, device=device, progress=progress, desc=desc,
               precision=precision)
    if dist.world_size() > 1:
        return _extract_distributed(backbone, source, entry, shard_rows, **run)
    try:
        arr = open_entry(entry, n, dim)
    except BadEntry:
        arr = None
    if arr is not None:
        return arr
    with entry_lock(entry):  # a damaged entry is decided under the lock: another process may be rebuilding it
        arr = _open_or_clear(entry, n, dim)
        if arr is not None:
            return arr
        _extract(backbone, source, entry, shard_rows, **run)
        arr = open_entry(entry, n, dim)
    assert arr is not None
    return arr


def _open_or_clear(entry: Path, n: int, dim: int) -> Optional[np.ndarray]:
    """Under the entry lock: the finished entry, or None after removing a damaged one's final files."""
    try:
        return open_entry(entry, n, dim)
    except BadEntry as e:
        log.warning("feature cache entry %s is damaged (%s); rebuilding it", entry, e)
        for name in (DONE_FILE, FEATURES_FILE):
            (entry / name).unlink(missing_ok=True)
    return None


def _layout(n: int, shard_rows: int) -> tuple[int, Callable[[int], int]]:
    """Number of shards of ``shard_rows`` rows over ``n`` images, and each shard's row count."""
    return max(1, -(-n // shard_rows)), lambda k: min(shard_rows, n - k * shard_rows)


def _write_shards(backbone: Backbone, source: ImageSource, parts: Path, shards: list[int], shard_rows: int, *,
                  batch_size, num_workers, device, progress, desc, precision, done_rows: int = 0) -> None:
    """Run the backbone over ``shards`` and write each as ``parts/part-K.npy`` (atomic; a fault point after each).

    One decoding pipeline serves all the shards (no worker start per shard, decoding runs on across
    shard boundaries); each shard is cut into its own batches of ``batch_size``, as a single
    shard's extraction would be, so the numbers do not depend on which shards were already there.
    """
    device = torch.device(device)
    backbone.eval().to(device).to(memory_format=torch.channels_last)
    n = len(source)
    plan = [(k, chunks(np.arange(k * shard_rows, min(n, (k + 1) * shard_rows)), batch_size)) for k in shards]
    stream = batch_features(backbone, source, [b for _, bs in plan for b in bs], num_workers=num_workers,
                            device=device, precision=precision)
    with closing(stream), tqdm(total=n, initial=done_rows, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for k, bs in plan:
            out = []
            for _ in bs:
                out.append(next(stream))
                bar.update(len(out[-1]))
            part = np.concatenate(out).astype(np.float32)
            with atomic_path(parts / f"part-{k:05d}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, part)
            maybe_die(f"extract:{k}")


def _meta(backbone: Backbone, source: ImageSource) -> dict:
    return {"backbone": backbone.name, "weights": backbone.weights_id, "preprocess": backbone.preprocess.to_dict(),
            "n": len(source), "dim": backbone.num_features, "images": source.fingerprint(), "format": FORMAT_VERSION}


def _extract(backbone: Backbone, source: ImageSource, entry: Path, shard_rows: int, **run) -> None:
    """Run the backbone over the missing shards and assemble the entry (caller holds the entry lock)."""
    n, dim = len(source), backbone.num_features
    n_shards, rows_of = _layout(n, shard_rows)
    parts = entry / "partial"
    done = _good_shards(parts, n_shards, rows_of, dim)
    _write_shards(backbone, source, parts, [k for k in range(n_shards) if k not in done], shard_rows,
                  done_rows=sum(rows_of(k) for k in done), **run)
    _assemble(entry, parts, n_shards, n, dim, _meta(backbone, source))


def _extract_distributed(backbone: Backbone, source: ImageSource, entry: Path, shard_rows: int, **run) -> np.ndarray:
    """The data-parallel extraction: rank 0 holds the entry lock and decides what is missing, every rank writes
    its share of the missing shards, rank 0 assembles ``features.npy`` and ``done.json`` after a barrier.

    With fewer shards than ranks the shards shrink to a multiple of the batch size (in their own
    ``partial-ROWS`` folder), so the batches, and so the numbers, are those of one process
    whenever ``shard_rows`` is itself a multiple of the batch size (the default 8192 is, for powers of two).
    """
    n, dim, world = len(source), backbone.num_features, dist.world_size()
    b = run["batch_size"]
    parts = entry / "partial"
    if -(-n // shard_rows) < world and shard_rows % b == 0:
        shard_rows = max(b, -(-(-(-n // world)) // b) * b)
        parts = entry / f"partial-{shard_rows}"
    n_shards, rows_of = _layout(n, shard_rows)
    with ExitStack() as held:
        def plan() -> Optional[list[int]]:
            try:
                if open_entry(entry, n, dim) is not None:
                    return None
            except BadEntry:
                pass
            held.enter_context(entry_lock(entry))
            if _open_or_clear(entry, n, dim) is not None:
                held.close()
                return None
            done = _good_shards(parts, n_shards, rows_of, dim)
            return [k for k in range(n_shards) if k not in done]

        todo = dist.on_main(plan)
        if todo is not None:
            mine = todo[dist.rank()::world]
            _write_shards(backbone, source, parts, mine, shard_rows, **{**run, "progress": run["progress"] and dist.is_main()})
            dist.barrier()
            dist.on_main(lambda: _assemble(entry, parts, n_shards, n, dim, _meta(backbone, source)))
    arr = open_entry(entry, n, dim)
    if arr is None:
        raise BadEntry(f"feature cache entry {entry} is unfinished after a data-parallel extraction")
    return arr
