"""Image sources: a folder of files, members of a zip, or an in-memory array.

Each source maps an index to a PIL RGB image and has stable string ids and a
cheap content fingerprint (the feature cache keys on it). Sources are pickled
into DataLoader workers, so file handles are opened lazily in each process.

Fingerprints cover: folders, each file's path, size and a sha256 of its first
and last 4 KiB (files up to 8 KiB whole), not dates, so a copied or moved
folder still hits the cache and an image replaced in place does not (about
50 µs a file with a warm page cache on 2 cores: ~1 min per million files,
paid once per process); zips, each member's name, CRC-32 and size from the
central directory (a content hash for free); arrays, every byte. Decoding
applies EXIF orientation and scales 16-bit greyscale to 8 bits.
"""
from __future__ import annotations

import hashlib
import io
import mmap
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from noisyft.data.base import ImageSource
from noisyft.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    """True if ``name`` has one of the image extensions (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


GREY16_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` upright and as 8-bit RGB, the way a photo viewer shows it.

    * EXIF orientation is applied (phone photos are stored sideways with a tag
      saying so), and
    * 16-bit greyscale (PNG/TIFF, PIL modes ``I;16*`` and ``I``) is scaled from
      0–65535 to 0–255; PIL's own ``convert`` clips it at 255, so most such
      images would come out almost white. (16-bit colour PNGs PIL already
      reduces to 8 bits itself.)
    """
    if im.getexif().get(0x0112, 1) != 1:  # 0x0112: Orientation; 1 = upright
        im = ImageOps.exif_transpose(im)
    if im.mode in GREY16_MODES:
        a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray(((a + 128) // 257).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_jpeg_fast(data: bytes) -> Optional[Image.Image]:
    """A JPEG decoded by libjpeg-turbo through ``torchvision.io.decode_jpeg`` (RGB, EXIF orientation applied), or None.

    About 3× faster than ``PIL.Image.open`` for small images (less Python per image) and pixel for
    pixel the same as :func:`to_rgb` of PIL's decode (tested on CIFAR-10, every chroma subsampling,
    progressive, greyscale and EXIF-rotated JPEGs), so cached features do not change. None (the
    caller falls back to PIL, which reports the problem) for anything else: not a JPEG, a CMYK or
    damaged one, torchvision without the decoder.
    """
    a = _jpeg_array(data)
    return None if a is None else Image.fromarray(np.ascontiguousarray(a))


def _jpeg_array(data: bytes) -> Optional[np.ndarray]:
    """:func:`decode_jpeg_fast`'s pixels as an H×W×3 uint8 array (a strided view), or None."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                        apply_exif_orientation=True)
    except Exception:  # truncated or unusual files: PIL decides (and names the problem)
        return None
    return t.permute(1, 2, 0).numpy()


def decode_array(data: bytes, name: str) -> np.ndarray:
    """``data`` decoded as :func:`decode_image` does, as an H×W×C uint8 array: a JPEG goes straight from
    libjpeg-turbo to the array (no PIL image in between, the common case of feature extraction)."""
    a = _jpeg_array(data)
    return a if a is not None else np.asarray(_decode_pil(io.BytesIO(data), name), dtype=np.uint8)


def read_image_file(path: Path, name: str) -> bytes:
    """``path``'s bytes; a missing or unreadable file → UserError naming ``name``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"cannot read image {name}: file not found") from None
    except OSError as e:
        raise UserError(f"cannot read image {name}: {e.strerror or e}") from None


def decode_image(fp: Union[str, Path, IO[bytes]], name: str) -> Image.Image:
    """Decode ``fp`` fully into an upright 8-bit RGB image (:func:`to_rgb`); any failure → UserError naming ``name``.

    JPEG bytes go through :func:`decode_jpeg_fast` first (the same pixels, faster); everything else,
    and any JPEG it declines, through PIL, whose ``convert`` forces the full decode, so truncated
    files fail here rather than later inside a transform.
    """
    if isinstance(fp, (str, Path)):
        fp = io.BytesIO(read_image_file(Path(fp), name))
    if isinstance(fp, io.BytesIO):
        im = decode_jpeg_fast(fp.getvalue())
        if im is not None:
            return im
    return _decode_pil(fp, name)


def _decode_pil(fp: IO[bytes], name: str) -> Image.Image:
    """PIL's full decode of ``fp`` (:func:`to_rgb`); any failure → UserError naming ``name``."""
    try:
        with Image.open(fp) as im:
            return to_rgb(im)
    except Exception as e:  # PIL raises many types for corrupt data
        reason = str(e) or type(e).__name__
        raise UserError(f"cannot read image {name}: {reason}") from None


class FolderSource(ImageSource):
    """Image files under ``root``; ids are their posix paths relative to it."""

    def __init__(self, root: Union[str, Path], relpaths: Sequence[str]):
        self.root = Path(root)
        self.ids = [Path(p).as_posix() for p in relpaths]

    def path(self, i: int) -> Path:
        return self.root / self.ids[i]

    def load(self, i: int) -> Image.Image:
        return decode_image(self.path(i), str(self.path(i)))

    def raw(self, i: int) -> np.ndarray:
        path = self.path(i)
        return decode_array(read_image_file(path, str(path)), str(path))

    def fingerprint(self) -> str:
        """sha256 over (relpath, :func:`content_sample_digest`) of every file: content, not dates.

        An image replaced in place keeps the same size and modification time
        but not the same bytes, so it changes the fingerprint; copying or
        moving the folder (new dates, same bytes) does not. Within a process
        the result is remembered as long as no file's size, inode, mtime or
        ctime changes, so repeated calls cost one ``stat`` per file.
        """
        paths = [self.root / rel for rel in self.ids]
        stats = _stat_all(paths)
        sig = hashlib.sha256(str(self.root.resolve()).encode())
        for rel, st in zip(self.ids, stats):
            sig.update(f"{rel}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
        memo = sig.hexdigest()
        if memo not in _FINGERPRINTS:
            h = hashlib.sha256(b"folder-content\0")
            for rel, digest in zip(self.ids, _map(content_sample_digest, paths)):
                h.update(f"{rel}\0{digest}\n".encode())
            _FINGERPRINTS[memo] = h.hexdigest()
        return _FINGERPRINTS[memo]


SAMPLE_BYTES = 4096  # hashed from each end of a file; files up to twice this are hashed whole
_FINGERPRINTS: dict[str, str] = {}  # stat signature of a folder source → its content fingerprint (this process)


def content_sample_digest(path: Path) -> str:
    """sha256 of a file's size, first and last ``SAMPLE_BYTES`` (the whole file when it is small).

    Reading two 4 KiB blocks per file keeps fingerprinting a million images to
    about the cost of opening each once; a change to an image's bytes almost
    always reaches its header or its end (re-encoding, resizing, editing).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.sha256(f"{size}\0".encode())
            if size <= 2 * SAMPLE_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(SAMPLE_BYTES))
                f.seek(size - SAMPLE_BYTES)
                h.update(f.read(SAMPLE_BYTES))
    except OSError as e:
        raise UserError(f"cannot read image file {path}: {e.strerror or e}") from None
    return h.hexdigest()


def _stat_all(paths: Sequence[Path]) -> list[os.stat_result]:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p))
        except OSError:
            raise UserError(f"image file missing: {p}") from None
    return out


def _map(fn, items: Sequence) -> list:
    """``fn`` over ``items``, in 8 threads when there are many (reads of a cold disk or network share overlap)."""
    if len(items) < 512:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fn, items, chunksize=256))


class ZipSource(ImageSource):
    """Members of a zip archive; ids are the member names.

    The ZipFile is opened on first use in each process (keyed by pid) and never
    pickled, so forked or spawned DataLoader workers each get their own handle.
    """

    def __init__(self, zip_path: Union[str, Path], members: Sequence[str]):
        self.zip_path = Path(zip_path)
        self.ids = list(members)
        self._handle: tuple[int, zipfile.ZipFile] | None = None
        self._mapped: tuple[int, mmap.mmap] | None = None
        self._fingerprint: tuple[tuple, str] | None = None  # (the zip's stat signature, fingerprint)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = state["_mapped"] = None
        return state

    def _zip(self) -> zipfile.ZipFile:
        pid = os.getpid()
        if self._handle is None or self._handle[0] != pid:
            try:
                self._handle = (pid, zipfile.ZipFile(self.zip_path))
            except (OSError, zipfile.BadZipFile) as e:
                raise UserError(f"cannot open zip {self.zip_path}: {e}") from None
        return self._handle[1]

    def _map(self) -> mmap.mmap:
        pid = os.getpid()
        if self._mapped is None or self._mapped[0] != pid:
            with open(self.zip_path, "rb") as f:
                self._mapped = (pid, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        return self._mapped[1]

    def _read(self, i: int) -> bytes:
        """Member ``i``'s bytes. A stored (uncompressed, unencrypted) member, the usual case for images, is
        sliced from a memory map of the archive and its CRC-32 checked (5× less Python than
        ``ZipFile.read``, a visible share of small images' decoding); anything else goes through zipfile."""
        name = f"{self.zip_path}:{self.ids[i]}"
        try:
            zf = self._zip()
            info = zf.getinfo(self.ids[i])
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                return zf.read(info)
            mm = self._map()
            head = mm[info.header_offset: info.header_offset + 30]
            if len(head) < 30 or head[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile("bad local file header")
            start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little")
            data = mm[start: start + info.compress_size]
            if len(data) != info.compress_size or zlib.crc32(data) != info.CRC:
                raise zipfile.BadZipFile(f"Bad CRC-32 for file {self.ids[i]!r}")
            return data
        except KeyError:
            raise UserError(f"cannot read image {name}: no such member in the zip") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"cannot read image {name}: {e}") from None

    def load(self, i: int) -> Image.Image:
        return decode_image(io.BytesIO(self._read(i)), f"{self.zip_path}:{self.ids[i]}")

    def raw(self, i: int) -> np.ndarray:
        return decode_array(self._read(i), f"{self.zip_path}:{self.ids[i]}")

    def fingerprint(self) -> str:
        """sha256 over (member, CRC32, size) from the central directory: a content hash for free.

        Kept while the zip's size, modification time and inode stay the same: the cache key asks for it
        once per split and a subset asks its parent, and over a whole archive it is a visible share
        of extracting a few thousand small images.
        """
        try:
            st = self.zip_path.stat()
        except OSError as e:
            raise UserError(f"cannot open zip {self.zip_path}: {e.strerror or e}") from None
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._fingerprint is None or self._fingerprint[0] != sig:
            self._fingerprint = (sig, self._central_directory_hash())
        return self._fingerprint[1]

    def _central_directory_hash(self) -> str:
        infos = self._zip().NameToInfo
        h = hashlib.sha256(b"zip\0")
        try:
            h.update("".join([f"{m}\0{infos[m].CRC:08x}\0{infos[m].file_size}\n" for m in self.ids]).encode())
        except KeyError as e:
            raise UserError(f"zip member missing: {self.zip_path}:{e.args[0]}") from None
        return h.hexdigest()


class ArraySource(ImageSource):
    """Images held in a uint8 array, N×H×W×C (C = 1 or 3) or N×H×W grey; ids are indices."""

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)
        ok_shape = array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3))
        if array.dtype != np.uint8 or not ok_shape:
            raise ValueError(f"ArraySource needs uint8 N×H×W or N×H×W×{{1,3}}, got {array.dtype} {array.shape}")
        self.array = array
        self.ids = [str(i) for i in range(len(array))]
        self._fingerprint: str | None = None

    def raw(self, i: int) -> np.ndarray:
        a = self.array[i]
        if a.ndim == 3 and a.shape[2] == 3:
            return a
        a = a.reshape(a.shape[0], a.shape[1])
        return np.repeat(a[:, :, None], 3, axis=2)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.raw(i)))

    def fingerprint(self) -> str:
        """sha256 of shape + bytes, computed once (the array is treated as immutable)."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"array\0{self.array.shape}\n".encode())
            h.update(np.ascontiguousarray(self.array).data)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def find_bad_indices(source: ImageSource) -> list[int]:
    """Decode every image of ``source``; return the indices of those that fail."""
    bad = []
    for i in range(len(source)):
        try:
            source.load(i)
        except UserError:
            bad.append(i)
    return bad


def find_bad_images(source: ImageSource) -> list[str]:
    """Decode every image of ``source``; return the ids of those that fail.

    Used by the ``skip_bad_images`` option so one corrupt file does not stop a
    long run half-way through an epoch.
    """
    return [source.ids[i] for i in find_bad_indices(source)]
