"""Images to predict on: no labels, no class folders, any layout.

``predict`` needs only images, so it takes any of

* a folder: every image under it, at any depth (class folders, ``train/`` and
  ``test/`` or none at all); ids are the paths relative to the folder;
* a ``.zip``: every image member (ids: member names; zip-slip names refused);
* an image file (id: the path as given);
* a text file listing image paths, one per line (blank lines and ``#``
  comments skipped; relative paths are relative to the list's folder; ids:
  the lines as written);
* a registered dataset spec (``demo``, ``cifar10:PATH``, …): its training images;
* several of these: ids are then prefixed with the input they came from
  (``photos/a.jpg``, ``more.zip:b.jpg``) so they stay unique and traceable.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from noisyft.data.base import ImageSource
from noisyft.data.datasets import DATASETS, list_images, open_dataset
from noisyft.data.sources import FolderSource, ZipSource, is_image_name
from noisyft.errors import UserError


class ConcatSource(ImageSource):
    """The images of several sources one after another; ``ids`` are each source's ids with its prefix."""

    def __init__(self, parts: Sequence[tuple[str, ImageSource]]):
        self.parts = [src for _, src in parts]
        self.ids = [prefix + i for prefix, src in parts for i in src.ids]
        self.starts = np.cumsum([0] + [len(src) for src in self.parts])

    def _locate(self, i: int) -> tuple[ImageSource, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])

    def load(self, i: int) -> Image.Image:
        src, j = self._locate(i)
        return src.load(j)

    def raw(self, i: int) -> np.ndarray:
        src, j = self._locate(i)
        return src.raw(j)

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"concat\0")
        for src in self.parts:
            h.update(src.fingerprint().encode() + b"\n")
        return h.hexdigest()


def open_images(specs: Union[str, Path, Sequence[Union[str, Path]]]) -> ImageSource:
    """The images named by ``specs`` (one spec or several; see the module docstring) as one source."""
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs:
        raise UserError("no images given: name a folder, a .zip, image files or a text file listing them")
    parts = [_open_one(str(s)) for s in specs]
    if len(parts) == 1:
        return parts[0][1]
    return ConcatSource(parts)


def _open_one(spec: str) -> tuple[str, ImageSource]:
    """(id prefix used when several inputs are combined, source) for one input."""
    path = Path(spec).expanduser()
    name, _, rest = spec.partition(":")
    if name in DATASETS and not path.exists():
        if name == "folder":
            return _open_one(rest)
        return f"{spec}:", open_dataset(spec).train.source
    if not path.exists():
        raise UserError(f"data path not found: {spec}")
    if path.is_dir() or zipfile.is_zipfile(path):
        names = list_images(path)
        if not names:
            raise UserError(f"no images found in {spec} (looked for .jpg .jpeg .png .bmp .gif .webp .tif .tiff files)")
        if path.is_dir():
            return f"{path.as_posix().rstrip('/')}/", FolderSource(path, names)
        return f"{spec}:", ZipSource(path, names)
    if is_image_name(path.name):
        return "", FolderSource(Path(""), [str(path)])
    return "", _read_list(path, spec)


def _read_list(path: Path, spec: str) -> FolderSource:
    """A text file of image paths, one per line, relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{spec} is neither an image, a zip, a folder nor a text file listing image paths") from None
    except OSError as e:
        raise UserError(f"cannot read {spec}: {e.strerror or e}") from None
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        target = path.parent / Path(line).expanduser()
        if not target.is_file():
            raise UserError(f"{spec} line {no}: {line} is not an existing file (paths are relative to {path.parent})")
        if not is_image_name(line):
            raise UserError(f"{spec} line {no}: {line} is not an image file (.jpg .jpeg .png .bmp .gif .webp .tif .tiff)")
        lines.append(str(Path(line).expanduser()))
    if not lines:
        raise UserError(f"{spec} lists no image paths (one path per line)")
    return FolderSource(path.parent, lines)
