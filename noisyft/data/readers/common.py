"""What every official-layout reader shares: finding the files, reading list files line by line, one-line errors.

The published datasets (Clothing1M, Tiny-ImageNet, CUB-200-2011, Stanford Cars, WebVision) each
come as images plus text (or ``.mat``) lists. A reader resolves its files under the given path
with :func:`need` (a missing one names what was expected where and where the dataset is
published), reads lists with :func:`read_lines` (1-based line numbers for the errors) and
checks that every listed image exists with :class:`FileIndex` (one directory listing per
folder, so a million keys cost a few thousand ``listdir`` calls, not a million ``stat``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

from noisyft.errors import UserError


def dataset_root(path: Optional[str], name: str, usage: str) -> Path:
    """``path`` as a Path; a UserError saying how to call the dataset when it is missing or not a folder."""
    if not path:
        raise UserError(f"dataset '{name}' needs a path: {usage}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{name}: {root} is not a folder ({'not found' if not root.exists() else 'a file'}); {usage}")
    return root


def find_base(root: Path, marker: str, subfolders: Sequence[str]) -> Path:
    """``root`` or the first of ``root/<sub>`` that holds ``marker`` (users pass the folder or its parent)."""
    for base in (root, *(root / s for s in subfolders)):
        if (base / marker).exists():
            return base
    return root


def need(base: Path, rel: str, name: str, published: str) -> Path:
    """``base/rel`` if it exists, else a one-line UserError naming it and where the dataset is published."""
    p = base / rel
    if not p.exists():
        raise UserError(f"{name}: {p} not found; {published}")
    return p


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, stripped text)`` of each non-blank line of a UTF-8 (or Latin-1) text file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    for k, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line:
            yield k, line


def bad_line(path: Path, line: int, what: str) -> UserError:
    """The one-line error for a malformed or inconsistent line of a list file."""
    return UserError(f"{path}:{line}: {what}")


def parse_int(path: Path, line: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad_line(path, line, f"{what} {text!r} is not an integer") from None


def safe_relpath(path: Path, line: int, rel: str) -> str:
    """A list file's image path in posix form; absolute paths and ``..`` (leaving the dataset) are refused."""
    p = rel.replace("\\", "/")
    parts = [c for c in p.split("/") if c not in ("", ".")]
    if p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in parts or not parts:
        raise bad_line(path, line, f"image path {rel!r} is absolute or leaves the dataset folder")
    return "/".join(parts)


class FileIndex:
    """Which files exist under ``root``, answered from one cached directory listing per folder."""

    def __init__(self, root: Path):
        self.root = root
        self._dirs: dict[str, frozenset[str]] = {}

    def names(self, folder: str) -> frozenset[str]:
        """File and folder names in ``root/folder`` (empty when it does not exist)."""
        if folder not in self._dirs:
            try:
                self._dirs[folder] = frozenset(os.listdir(self.root / folder))
            except OSError:
                self._dirs[folder] = frozenset()
        return self._dirs[folder]

    def exists(self, rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        return name in self.names(folder)

    def check(self, rel: str, listed_in: Path, line: int) -> str:
        """``rel`` if the image is there, else the one-line error naming the list file and line."""
        if not self.exists(rel):
            raise bad_line(listed_in, line, f"image {rel} not found under {self.root}")
        return rel


def unique_names(names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Class names made unique: a name two classes share gets its key appended (``crane (n02012849)``)."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [n if seen[n] == 1 else f"{n} ({k})" for n, k in zip(names, keys)]


def spec_options(path: Optional[str], name: str, allowed: dict[str, str]) -> tuple[Optional[str], dict[str, str]]:
    """Split ``PATH?key=value&key=value`` (the reader options of a ``--data`` spec) into the path and the options.

    ``allowed`` maps each option to its help; an unknown or repeated option, or one without a
    value, is a one-line UserError listing them. Text after the last ``?`` without any ``=`` is not
    options but part of the path (a glob's ``?`` wildcard).
    """
    if not path or "?" not in path or "=" not in path.rpartition("?")[2]:
        return path, {}  # no options (a ``?`` without ``key=`` is part of the path, e.g. a glob's wildcard)
    path, _, query = path.rpartition("?")
    opts: dict[str, str] = {}
    listed = ", ".join(f"{k}= ({v})" for k, v in allowed.items())
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in allowed:
            raise UserError(f"{name}: unknown option {key!r} in the data spec; options: {listed or 'none'}")
        if not eq or not value:
            raise UserError(f"{name}: option {key} needs a value ({key}=...); {allowed[key]}")
        if key in opts:
            raise UserError(f"{name}: option {key} is given twice in the data spec")
        opts[key] = value
    return path or None, opts


def cache_root() -> Path:
    """``$NOISYFT_CACHE`` or ``~/.cache/noisyft`` (what the feature cache uses; readers keep their indexes there too)."""
    return Path(os.environ.get("NOISYFT_CACHE") or Path.home() / ".cache" / "noisyft")
