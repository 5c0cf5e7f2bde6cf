"""Typed option values: one declaration per option (type, default, help, allowed range), one checker.

FitConfig fields and every method's settings dataclass are declared with
:func:`option`, in the manner of peft's ``LoraConfig`` (``field(default=...,
metadata={"help": ...})``); the metadata also carries the allowed range or
choices. :func:`check_value` turns a value as it arrives (from the command
line, a YAML/JSON file or Python) into the declared type or raises a one-line
:class:`UserError` naming the option and what is allowed: a string where a
number belongs, a bool where an integer belongs, NaN/inf, 2.5 epochs or a value
outside the range are all refused, never coerced into something else.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from noisyft.errors import UserError


@dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` bounds are open-ended. ``str`` gives the text error messages show."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))

    def __str__(self) -> str:
        lo, hi = _num(self.low), _num(self.high)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {lo}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {hi}"
        return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


def _num(x: Optional[float]) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, None, low_open=True)            # sizes, learning rates
NON_NEGATIVE = Range(0, None)                       # epochs, workers, weight decay
FRACTION = Range(0, 1, high_open=True)              # held-out shares: [0, 1)
UNIT_OPEN = Range(0, 1, low_open=True, high_open=True)
SEED = Range(0, 2 ** 32 - 1)                        # numpy, torch and scikit-learn all accept this range


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           range: Optional[Range] = None, choices: Optional[Sequence[str]] = None) -> Any:
    """A dataclass field carrying its help text and allowed values in ``metadata``."""
    meta = {"help": help, "range": range, "choices": tuple(choices) if choices else None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return f"the bool {str(v).lower()}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return f"{v!r}"


def shown(label: str, value: Any) -> str:
    """``label`` followed by ``value`` as the user typed it: ``--tau 1.5``, ``--extra warmup=-1`` (label ends in ``=``)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = value if value and value.strip() == value and " " not in value else repr(value)
    else:
        text = repr(value)
    return f"{label}{text}" if label.endswith("=") else f"{label} {text}"


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of ``Optional[T]`` / ``T``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, False


def type_name(tp: Any) -> str:
    inner, optional = _unwrap(tp)
    base = {bool: "bool", int: "int", float: "float", str: "str", dict: "mapping"}.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{base} or null" if optional else base


def check_value(label: str, value: Any, tp: Any, f: Optional[dataclasses.Field] = None) -> Any:
    """``value`` as type ``tp`` within the field's range/choices, or a UserError naming ``label`` (e.g. ``--tau``)."""
    inner, optional = _unwrap(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"{label.rstrip('=')}: a value is required (expected {type_name(tp)})")
    if inner is bool:
        if not isinstance(value, bool):
            raise UserError(f"{shown(label, value)}: expected true or false, not {_kind(value)}")
        return value
    if inner is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{shown(label, value)}: expected a whole number, not {_kind(value)}")
    elif inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{shown(label, value)}: expected a number, not {_kind(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{shown(label, value)}: expected a finite number")
    elif inner is str:
        if not isinstance(value, str):
            raise UserError(f"{shown(label, value)}: expected text, not {_kind(value)}")
    elif inner is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{label.rstrip('=')}: expected a mapping of KEY: VALUE, not {_kind(value)}")
    meta = f.metadata if f is not None else {}
    rng, choices = meta.get("range"), meta.get("choices")
    if rng is not None and value not in rng:
        raise UserError(f"{shown(label, value)}: must be {rng}")
    if choices and value not in choices:
        raise UserError(f"{shown(label, value)}: choose from {', '.join(choices)}")
    return value


def did_you_mean(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def check_fields(cls: type, values: Mapping[str, Any], label: typing.Callable[[str], str]) -> dict:
    """Check each of ``values`` against the field of ``cls`` with that name; unknown names are not checked here."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {k: check_value(label(k), v, hints[k], fields[k]) if k in fields else v for k, v in values.items()}


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of every field of the dataclass ``cls`` (for ``noisyft methods -v``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append((f.name, type_name(hints[f.name]), default, field_help(f)))
    return out
