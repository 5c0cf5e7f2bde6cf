"""User-supplied labels from a ``path,label`` CSV: how users bring their own noisy labels.

Rules (also in the README):

* A header row is required with columns ``path`` and ``label`` (case-insensitive,
  any order; other columns are ignored). Blank lines are skipped.
* ``path`` names an image of the *training* set, in the form of its id: the path
  relative to the data root (a directory) or the member name (a zip). Leading
  folders that every training image shares may be left out, so for a tree
  ``data.zip: cifar/train/cat/1.jpg`` any of ``cifar/train/cat/1.jpg``,
  ``train/cat/1.jpg`` and ``cat/1.jpg`` is accepted. ``\\`` and ``./`` are
  tolerated; absolute paths and ``..`` are errors. For array datasets (cifar10,
  fashion-mnist) the path is the sample index.
* ``label`` is a class name, or an integer index into the sorted class list.
  A value that equals a class name is a name, even if it looks like a number.
* The rows define the training set: images under the root but not in the CSV
  are left out (counted in ``info["not_in_csv"]``); a row naming no training
  image, a duplicate path, an unknown class or an out-of-range index is an error
  naming the CSV file, the data row (1-based, header excluded) and the line.
* Class list: the folder classes when the tree has ``<class>/<file>`` folders;
  otherwise (a flat folder of images) the sorted distinct CSV names, or
  ``"0".."K-1"`` when every label is an integer.
* The folder labels become ``true_labels`` only when ``folder_labels_are_true``;
  otherwise ``true_labels`` is None (the truth is unknown).
"""
from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from noisyft.data.base import LabeledSet, SubsetSource
from noisyft.data.sources import IMAGE_EXTENSIONS, is_image_name
from noisyft.errors import UserError

REQUIRED_COLUMNS = ("path", "label")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class CsvRow:
    """One data row: 1-based data row number, physical line, and the two cells."""

    row: int
    line: int
    path: str
    label: str


def _where(csv_name: str, row: CsvRow) -> str:
    return f"{csv_name}: row {row.row} (line {row.line})"


def read_labels_csv(path: Union[str, Path]) -> list[CsvRow]:
    """Read and minimally validate the CSV (header, columns, non-empty cells)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_rows(csv.reader(f), path.name)
    except FileNotFoundError:
        raise UserError(f"labels CSV not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"labels CSV {path} is not UTF-8 text") from None
    except csv.Error as e:
        raise UserError(f"labels CSV {path}: malformed CSV: {e}") from None


def _parse_rows(reader, name: str) -> list[CsvRow]:
    header = next((r for r in reader if any(c.strip() for c in r)), None)
    if header is None:
        raise UserError(f"labels CSV {name} is empty: expected a header 'path,label' and one row per image")
    cols = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        found = ",".join(c.strip() for c in header)
        raise UserError(f"labels CSV {name}: missing column(s) {','.join(missing)}; "
                        f"needs columns path,label, found: {found}")
    ip, il = cols.index("path"), cols.index("label")
    rows: list[CsvRow] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        get = lambda k: cells[k].strip() if k < len(cells) else ""  # noqa: E731
        row = CsvRow(len(rows) + 1, reader.line_num, get(ip), get(il))
        if not row.path or not row.label:
            raise UserError(f"{_where(name, row)}: empty {'path' if not row.path else 'label'}")
        rows.append(row)
    if not rows:
        raise UserError(f"labels CSV {name} has a header but no data rows")
    return rows


def normalize_csv_path(raw: str, csv_name: str, row: CsvRow, root: str) -> str:
    """Turn a CSV path cell into id form; reject absolute paths and ``..``."""
    p = raw.replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise UserError(f"{_where(csv_name, row)}: absolute path '{raw}'; paths must be relative to {root}")
    parts = [c for c in p.split("/") if c not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{_where(csv_name, row)}: path '{raw}' uses '..' and leaves {root}")
    return "/".join(parts)


def id_aliases(ids: list[str]) -> dict[str, int]:
    """Map every accepted spelling of each id to its index.

    Accepted: the id itself and the id with any number of the leading folders
    that *all* ids share removed (e.g. the zip's top folder and ``train/``).
    """
    dirs = [i.split("/")[:-1] for i in ids]
    common = dirs[0] if dirs else []
    for d in dirs[1:]:
        n = 0
        while n < min(len(common), len(d)) and common[n] == d[n]:
            n += 1
        common = common[:n]
    lookup: dict[str, int] = {}
    for k in range(len(common) + 1):
        cut = sum(len(c) + 1 for c in common[:k])
        for idx, i in enumerate(ids):
            lookup.setdefault(i[cut:], idx)
    return lookup


def _match_rows(rows: list[CsvRow], data: LabeledSet, csv_name: str, root: str) -> list[int]:
    """Index into ``data`` of each row's image; errors for unknown and duplicate paths."""
    lookup = id_aliases(data.ids)
    files = any(is_image_name(i) for i in data.ids[:1])
    seen: dict[int, CsvRow] = {}
    out = []
    for row in rows:
        key = normalize_csv_path(row.path, csv_name, row, root)
        idx = lookup.get(key)
        if idx is None:
            hint = ""
            if files and not is_image_name(key):
                hint = f" (images must end in {', '.join(sorted(IMAGE_EXTENSIONS))})"
            raise UserError(f"{_where(csv_name, row)}: '{row.path}' is not a training image under {root}{hint}")
        if idx in seen:
            raise UserError(f"{_where(csv_name, row)}: duplicate path '{row.path}' "
                            f"(already given in row {seen[idx].row}, line {seen[idx].line})")
        seen[idx] = row
        out.append(idx)
    return out


def classes_from_csv(rows: list[CsvRow], csv_name: str) -> list[str]:
    """Class list for a tree without class folders: sorted names, or 0..K-1 if all integers."""
    values = [r.label for r in rows]
    if all(_INT.fullmatch(v) for v in values):
        top = max(int(v) for v in values)
        if min(int(v) for v in values) < 0:
            bad = next(r for r in rows if int(r.label) < 0)
            raise UserError(f"{_where(csv_name, bad)}: negative label index {bad.label}")
        return [str(k) for k in range(top + 1)]
    return sorted(set(values))


def parse_label(row: CsvRow, classes: list[str], index: dict[str, int], csv_name: str) -> int:
    """A class name, else an integer index into ``classes``; errors name the row."""
    if row.label in index:
        return index[row.label]
    if _INT.fullmatch(row.label):
        k = int(row.label)
        if 0 <= k < len(classes):
            return k
        raise UserError(f"{_where(csv_name, row)}: label index {k} out of range 0..{len(classes) - 1} "
                        f"({len(classes)} classes)")
    near = difflib.get_close_matches(row.label, classes, n=3, cutoff=0.5)
    near += [c for c in classes if c.lower() == row.label.lower() and c not in near]
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    raise UserError(f"{_where(csv_name, row)}: unknown class '{row.label}'{hint} (classes: {shown})")


def apply_labels_csv(csv_path: Union[str, Path], data: LabeledSet, *, root: str,
                     folder_labels_are_true: bool = False) -> tuple[LabeledSet, dict]:
    """Relabel ``data`` from the CSV and restrict it to the rows listed.

    ``data`` is the training split as found (folder labels, or ``classes == []``
    for a flat tree); ``root`` is how error messages name where images live.
    Returns the new set (in the tree's order, so shuffling the CSV changes
    nothing) and info counts.
    """
    csv_name = Path(csv_path).name
    rows = read_labels_csv(csv_path)
    picked = _match_rows(rows, data, csv_name, root)
    classes = list(data.classes) or classes_from_csv(rows, csv_name)
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([parse_label(r, classes, index, csv_name) for r in rows], dtype=np.int64)
    order = np.argsort(picked, kind="stable")
    idx = np.asarray(picked, dtype=np.int64)[order]
    true = _true_labels(data, idx, folder_labels_are_true, root)
    out = LabeledSet(SubsetSource(data.source, idx), labels[order], classes, true)
    info = {"labels_csv": str(csv_path), "csv_rows": len(rows), "not_in_csv": len(data) - len(rows)}
    return out, info


def _true_labels(data: LabeledSet, idx: np.ndarray, trusted: bool, root: str):
    if not trusted:
        return None
    if not data.classes:
        raise UserError(f"folder_labels_are_true: {root} has no <class>/<file> folders (2 or more), "
                        f"so there are no folder labels")
    return data.labels[idx]
