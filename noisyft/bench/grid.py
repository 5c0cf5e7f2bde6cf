"""``noisyft bench``: a grid of fits (data × noise × backbone × method × seed) and its results table.

A grid is a YAML mapping with the list keys ``data``, ``noises``, ``backbones``,
``methods`` and ``seeds`` (a scalar counts as a one-item list; a noise of
``null``/``none`` means the given labels as they are); every other key is a
FitConfig field shared by all cells (``image_size``, ``epochs_lp``,
``max_train``, ``extra`` …; a common ``extra`` key goes to the methods whose
settings have it and must belong to at least one). ``per_method: {method: {field: value}}``
optionally overrides common settings for one method; its list keys (``noises``,
``data``, ``backbones``, ``seeds``) restrict that method to a part of the grid
(an expensive method run at one noise setting only).

Each cell is one :func:`noisyft.api.fit` writing ``BENCH_DIR/cells/<cell>``, so
the bench is resumable for free: a finished cell is never rerun (it is skipped
before any work), a killed cell resumes from its checkpoint. Several bench
processes may share a grid: a cell is only run by the process holding
``BENCH_DIR/locks/<cell>.lock``, created atomically (``O_CREAT | O_EXCL``) with
the holder's pid and host; a lock whose pid is dead on this host is stale and
taken over. A failing cell is recorded (``status: failed`` and the error) and
the grid goes on; the next run retries it.

When the cells are done (or running elsewhere) the bench writes
``results.json`` (every cell, and the per-setting means over seeds),
``results.md`` (the TURN paper's layout: rows = methods, column groups = noise
settings with the headline test accuracy — validation-selected when the grid
sets ``val_fraction``, else the last epoch's, of the model the method delivers —
the fine-tuned best / last and the linear probe's best as secondary columns,
training time, selection precision / recall / F1 and detection AUROC; each
setting's best accuracy and AUROC in bold) and the plots of
:mod:`noisyft.bench.plots`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from noisyft.atomic import write_text
from noisyft.config import FitConfig, read_mapping
from noisyft.errors import UserError
from noisyft.run.files import LABEL_ISSUES, STATE, SUMMARY

log = logging.getLogger("noisyft")

GRID_KEYS = ("data", "noises", "backbones", "methods", "seeds")

# The built-in --quick grid: every method family on the packaged CIFAR-10 sample at 64 px, cut for a 2-core
# CPU: E_LP 20 as in the paper, E_FFT 2 for TURN and the FFT baselines alike (one fine-tuning budget).
# Measured on 2 quiet cores with a cold feature cache: 1 min 26 s (benchmarks/results/bench_quick.md).
QUICK: dict = {
    "data": ["demo"], "noises": ["sym:0.6"], "backbones": ["efficientnet_lite0"],
    "methods": ["turn", "ce-lp", "ce-fft", "gce-lp", "small-loss-lp", "dividemix-lp", "unicon-lp", "cleanlab"],
    "seeds": [0], "image_size": 64, "epochs_lp": 20, "epochs_fft": 2,
}


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe rendering of ``text`` (``sym:0.6`` → ``sym-0.6``); long ones end in a short hash."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"
    if len(s) > limit:
        s = f"{s[:limit - 7]}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return s


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    data: str
    noise: Optional[str]
    backbone: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return "__".join([_slug(self.data), _slug(self.noise or "none"), _slug(self.backbone), _slug(self.method),
                          f"s{self.seed}"])


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _noise(value: Any) -> Optional[str]:
    return None if value is None or str(value).lower() in ("none", "clean", "") else str(value)


@dataclass
class BenchSpec:
    """A grid and the settings every cell shares."""

    data: list[str]
    noises: list[Optional[str]]
    backbones: list[str]
    methods: list[str]
    seeds: list[int]
    common: dict = field(default_factory=dict)
    per_method: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, source: str = "bench config") -> "BenchSpec":
        """Validate a grid mapping; unknown keys and bad names fail with one line naming them."""
        d = {str(k).replace("-", "_"): v for k, v in d.items()}
        missing = [k for k in GRID_KEYS if k not in d]
        if missing:
            raise UserError(f"{source}: missing key(s) {', '.join(missing)} (a grid needs {', '.join(GRID_KEYS)})")
        grid = {k: _as_list(d.pop(k)) for k in GRID_KEYS}
        per_method = d.pop("per_method", None) or {}
        for bad in ("method", "backbone", "noise", "seed", "out"):
            if bad in d:
                raise UserError(f"{source}: {bad!r} is set by the grid (use {bad}s / the bench directory), not a common setting")
        FitConfig.from_dict(d)  # unknown common keys → one UserError with suggestions
        from noisyft.methods import METHODS

        for m in grid["methods"] + list(per_method):
            METHODS.get(m)  # unknown method → UserError with the known names
        per_method = {m: _restriction(grid, m, dict(v or {}), source) for m, v in per_method.items()}
        spec = cls(data=[str(x) for x in grid["data"]], noises=[_noise(x) for x in grid["noises"]],
                   backbones=[str(x) for x in grid["backbones"]], methods=[str(x) for x in grid["methods"]],
                   seeds=[int(x) for x in grid["seeds"]], common=d, per_method=per_method)
        spec.validate(source)
        return spec

    def validate(self, source: str) -> None:
        """Every cell's settings checked before any cell runs (one line naming the grid file and the setting)."""
        from noisyft.methods import validate_config
        from noisyft.methods.settings import MOVED, settings_class
        from noisyft.options import did_you_mean

        extra = self.common.get("extra") or {}
        if not isinstance(extra, dict):
            raise UserError(f"{source}: extra: expected a mapping of KEY: VALUE")
        known = {f.name for m in self.methods for f in dataclasses.fields(settings_class(m))}
        for key in extra:  # a common key must belong to some method of the grid, as --extra must to its method
            if key in MOVED:
                raise UserError(f"{source}: extra.{key}: not a method setting any more; {MOVED[key]}")
            if key not in known:
                raise UserError(f"{source}: extra.{key}: no method of the grid has this setting{did_you_mean(key, known)}")
        for cell in self.cells():
            sources = {k: source for k in self.common} | {f"extra.{k}": source for k in extra}
            own = self.per_method.get(cell.method, {})
            sources |= {k: f"{source}: per_method.{cell.method}" for k in own}
            sources |= {f"extra.{k}": f"{source}: per_method.{cell.method}" for k in (own.get("extra") or {})}
            validate_config(self.fit_config(cell, Path(".")), sources)

    def cells(self) -> list[Cell]:
        """Every cell, in the order the bench runs them (seeds innermost, so each setting fills up first)."""
        return [Cell(d, n, b, m, s) for d in self.data for n in self.noises for b in self.backbones
                for m in self.methods for s in self.seeds
                if self._in_grid(m, {"data": d, "noises": n, "backbones": b, "seeds": s})]

    def _in_grid(self, method: str, at: dict) -> bool:
        only = self.per_method.get(method, {})
        return all(at[key] in only[key] for key in RESTRICT_KEYS if key in only)

    def fit_config(self, cell: Cell, bench_dir: Path) -> FitConfig:
        """The cell's FitConfig: common settings < per_method settings; common ``extra`` keys the cell's
        method does not have are left out (they are meant for other methods of the grid)."""
        from noisyft.methods.settings import settings_class

        settings = {k: v for k, v in self.per_method.get(cell.method, {}).items() if k not in RESTRICT_KEYS}
        own = {f.name for f in dataclasses.fields(settings_class(cell.method))}
        common_extra = {k: v for k, v in (self.common.get("extra") or {}).items() if k in own}
        extra = {**common_extra, **(settings.get("extra") or {})}
        values = {"progress": False, **self.common, **settings, "extra": extra,
                  "data": cell.data, "noise": cell.noise, "backbone": cell.backbone, "method": cell.method,
                  "seed": cell.seed, "out": str(cell_dir(bench_dir, cell))}
        return FitConfig.from_dict(values)

    def to_dict(self) -> dict:
        return {"data": self.data, "noises": self.noises, "backbones": self.backbones, "methods": self.methods,
                "seeds": self.seeds, **self.common, **({"per_method": self.per_method} if self.per_method else {})}


RESTRICT_KEYS = ("data", "noises", "backbones", "seeds")  # per_method keys that restrict a method's cells


def _restriction(grid: dict, method: str, settings: dict, source: str) -> dict:
    """Validate one ``per_method`` entry: its grid keys must name values of the grid (noises normalised)."""
    for key in RESTRICT_KEYS:
        if key in settings:
            norm = _noise if key == "noises" else (int if key == "seeds" else str)
            values = [norm(x) for x in _as_list(settings[key])]
            outside = [str(x) for x in values if x not in [norm(g) for g in grid[key]]]
            if outside:
                raise UserError(f"{source}: per_method.{method}.{key} names {', '.join(outside)}, which the grid's {key} lack")
            settings[key] = values
    return settings


def load_spec(path: str | Path) -> BenchSpec:
    """Read a YAML/JSON grid file."""
    data = read_mapping(path, "bench config")
    return BenchSpec.from_dict(data, str(path))


def cell_dir(bench_dir: Path, cell: Cell) -> Path:
    return Path(bench_dir) / "cells" / cell.name


def cell_finished(path: Path) -> bool:
    """Whether a cell's run directory holds a finished fit (the test ``api.fit`` itself uses)."""
    try:
        state = json.loads((path / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return "done" in state.get("finished", []) and (path / SUMMARY).exists() and (path / LABEL_ISSUES).exists()


# ---------------------------------------------------------------------------
# Per-cell locks
# ---------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class CellLock:
    """An exclusive, crash-safe claim on one cell: a lock file created with O_EXCL holding pid and host.

    A lock left by a dead process (same host, pid gone) is stale: it is moved aside atomically (only one
    contender's rename can succeed) and the claim is retried. Locks from another host are always respected.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def holder(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # being written right now, or garbage: treat as held by an unknown owner
            return {"pid": None, "host": None}

    def stale(self, info: Optional[dict]) -> bool:
        """Whether lock contents ``info`` name a dead process on this host."""
        if not info or not isinstance(info.get("pid"), int):
            return False
        return info.get("host") == socket.gethostname() and not _pid_alive(info["pid"])

    def acquire(self) -> bool:
        """Claim the cell; False when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if not self.stale(info) or not self._break(info):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
            self.held = True
            return True
        return False

    def _break(self, seen: dict) -> bool:
        """Move a stale lock aside; if the file moved turns out to be a fresh lock, put it back."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else removed it: just retry the claim
        try:
            moved = json.loads(aside.read_text())
        except (OSError, json.JSONDecodeError):
            moved = None
        if moved != seen:  # we raced with a new owner: restore its lock unless a third process claimed meanwhile
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("took over the stale lock of dead process %s on %s", seen.get("pid"), self.path.name)
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "CellLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def run_cell(spec: BenchSpec, cell: Cell, bench_dir: Path, fit: Callable) -> str:
    """Run one cell unless it is finished or claimed by another process: 'done', 'ran', 'failed' or 'busy'."""
    path = cell_dir(bench_dir, cell)
    if cell_finished(path):
        return "done"
    lock = CellLock(Path(bench_dir) / "locks" / f"{cell.name}.lock")
    if not lock.acquire():
        return "busy"
    with lock:
        if cell_finished(path):  # finished by another process between our check and our claim
            return "done"
        err = path / "error.txt"
        # the last attempt's error goes first: a folder holding only error.txt is not a run, and fit would refuse it
        err.unlink(missing_ok=True)
        try:
            fit(spec.fit_config(cell, bench_dir))
        except Exception as e:  # one broken cell must not stop the grid; KeyboardInterrupt still does
            path.mkdir(parents=True, exist_ok=True)
            write_text(err, "".join(traceback.format_exception(e)))
            log.error("cell %s failed: %s", cell.name, e)
            return "failed"
        err.unlink(missing_ok=True)
        return "ran"
