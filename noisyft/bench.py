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
:mod:`noisyft.bench_plots`.
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

import numpy as np

from noisyft.atomic import write_json, write_text
from noisyft.config import FitConfig, read_mapping
from noisyft.errors import UserError

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
        state = json.loads((path / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return "done" in state.get("finished", []) and (path / "summary.json").exists() and (path / "label_issues.csv").exists()


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
        try:
            fit(spec.fit_config(cell, bench_dir))
        except Exception as e:  # one broken cell must not stop the grid; KeyboardInterrupt still does
            path.mkdir(parents=True, exist_ok=True)
            write_text(err, "".join(traceback.format_exception(e)))
            log.error("cell %s failed: %s", cell.name, e)
            return "failed"
        err.unlink(missing_ok=True)
        return "ran"


def run_bench(spec: BenchSpec, bench_dir: str | Path, *, fit: Optional[Callable] = None, plots: bool = True,
              echo: Callable[[str], None] = print, run: bool = True) -> dict:
    """Run every unfinished, unclaimed cell of ``spec`` into ``bench_dir``; write and return the results.

    ``run=False`` only collects: the tables show what has finished so far (the rest as pending).
    """
    if fit is None:
        from noisyft.api import fit
    bench_dir = Path(bench_dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    write_json(bench_dir / "bench.json", spec.to_dict())
    cells = spec.cells() if run else []
    for k, cell in enumerate(cells, 1):
        t = time.perf_counter()
        status = run_cell(spec, cell, bench_dir, fit)
        extra = f" in {time.perf_counter() - t:.0f}s" if status in ("ran", "failed") else ""
        echo(f"[{k}/{len(cells)}] {cell.name}: {status}{extra}")
    results = collect(spec, bench_dir)
    write_results(bench_dir, results)
    if plots:
        from noisyft.bench_plots import write_plots

        results["plots"] = [str(p) for p in write_plots(bench_dir, results)]
    return results


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


def _last_selection(records: list[dict]) -> dict:
    """Precision / recall / F1 of the last selection epoch (averaged over its records, e.g. two heads).

    ``clean_set_f1`` is the F1 of the detector's whole clean set where a method trains on a part of
    it (TURN's GMM clean set before class-balanced subsampling); elsewhere the two sets are one.
    """
    scored = [r for r in records if "precision" in r]
    if not scored:
        return {}
    last = max(r["epoch"] for r in scored)
    rows = [r for r in scored if r["epoch"] == last]
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("precision", "recall", "f1")} | {"epoch": last}
    return out | {"clean_set_f1": float(np.mean([r.get("gmm_f1", r["f1"]) for r in rows]))}


def selection_curve(records: list[dict]) -> list[dict]:
    """Per selection epoch: mean precision / recall / F1 / selected count over that epoch's records."""
    by_epoch: dict[int, list[dict]] = {}
    for r in records:
        if "precision" in r:
            by_epoch.setdefault(int(r["epoch"]), []).append(r)
    return [{"epoch": e, **{k: float(np.mean([r[k] for r in rs])) for k in ("precision", "recall", "f1", "selected")}}
            for e, rs in sorted(by_epoch.items())]


ACC_KEYS = ("test_acc", "last_test_acc", "val_selected_test_acc", "fine_tuned_best_test_acc", "fine_tuned_last_test_acc",
            "probe_best_test_acc", "probe_last_test_acc")


def accuracy_columns(metrics: list[dict]) -> dict:
    """A cell's accuracy columns, from its ``metrics.jsonl`` records (see :mod:`noisyft.headline`).

    ``test_acc`` is the delivered model's (validation-selected when the run logged validation accuracy,
    else last epoch; ``test_acc_rule`` says which); ``last_test_acc`` / ``val_selected_test_acc`` are the
    delivered phase's; ``fine_tuned_*`` and ``probe_*`` are the ``fft`` and ``lp`` phases' own numbers.
    Computed from the log rather than ``summary.json`` so runs finished by older code tabulate too.
    """
    from noisyft.headline import accuracy_summary, delivered_block

    acc = accuracy_summary(metrics)
    delivered = delivered_block(acc) or {}
    row = {"test_acc": acc.get("test_acc"), "test_acc_rule": acc.get("test_acc_rule"),
           "test_acc_epoch": acc.get("test_acc_epoch"), "delivered_phase": acc.get("delivered_phase"),
           "last_test_acc": delivered.get("last_test_acc"), "val_selected_test_acc": delivered.get("val_selected_test_acc")}
    for block in ("fine_tuned", "probe"):
        b = acc.get(block) or {}
        row.update({f"{block}_best_test_acc": b.get("best_test_acc"), f"{block}_last_test_acc": b.get("last_test_acc")})
    return row


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def cell_row(cell: Cell, bench_dir: Path) -> dict:
    """One cell's headline numbers from its metrics log and summary (or its status when it has none)."""
    path = cell_dir(bench_dir, cell)
    row = {"cell": cell.name, **dataclasses.asdict(cell)}
    if cell_finished(path):
        s = json.loads((path / "summary.json").read_text())
        timings = s.get("timings", {})
        total = float(timings.get("total", 0.0))
        row.update(status="done", **accuracy_columns(_read_jsonl(path / "metrics.jsonl")),
                   time_total=total, time_train=total - float(timings.get("extraction", 0.0)), timings=timings,
                   realised_noise=s.get("realised_noise"), selection=_last_selection(s.get("selection", [])),
                   selection_curve=selection_curve(s.get("selection", [])),
                   auroc=(s.get("detection") or {}).get("auroc"),
                   precision_at_k=(s.get("detection") or {}).get("precision_at_k"))
    elif (path / "error.txt").exists():
        lines = (path / "error.txt").read_text().strip().splitlines()
        row.update(status="failed", error=lines[-1] if lines else "")
    else:
        lock = CellLock(Path(bench_dir) / "locks" / f"{cell.name}.lock")
        info = lock.holder()
        row.update(status="running" if info and not lock.stale(info) else "pending")
    return row


_MEAN_KEYS = ACC_KEYS + ("time_total", "time_train", "auroc", "precision_at_k")


def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def aggregate(rows: list[dict]) -> list[dict]:
    """Means (and standard deviations) over seeds per (data, backbone, noise, method)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["backbone"], r["noise"], r["method"]), []).append(r)
    out = []
    for (data, backbone, noise, method), rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        agg = {"data": data, "backbone": backbone, "noise": noise, "method": method, "seeds": len(rs),
               "finished": len(done), "statuses": sorted({r["status"] for r in rs}),
               "test_acc_rules": sorted({r["test_acc_rule"] for r in done if r.get("test_acc_rule")})}
        for k in _MEAN_KEYS:
            agg[k], agg[f"{k}_std"] = _mean_std([r.get(k) for r in done])
        for k in ("precision", "recall", "f1", "clean_set_f1"):
            agg[f"selection_{k}"], _ = _mean_std([r.get("selection", {}).get(k) for r in done])
        out.append(agg)
    return out


def collect(spec: BenchSpec, bench_dir: str | Path) -> dict:
    """Every cell's row, the means over seeds, and the grid they came from."""
    rows = [cell_row(c, Path(bench_dir)) for c in spec.cells()]
    return {"spec": spec.to_dict(), "cells": rows, "table": aggregate(rows),
            "counts": {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "running", "pending")}}


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


N_COLUMNS = 6  # per noise setting: headline accuracy, fine-tuned best / last, probe best, time, selection, AUROC


def headline_rule(spec: dict) -> str:
    """The grid's headline accuracy: validation-selected when the grid carves a validation split, else last epoch."""
    from noisyft.headline import LAST_EPOCH, VAL_SELECTED

    return VAL_SELECTED if float(spec.get("val_fraction") or 0) > 0 else LAST_EPOCH


def _bold(text: str, win: bool) -> str:
    return f"**{text}**" if win else text


def _winners(aggs: list[dict], key: str, digits: int) -> Optional[float]:
    """The best value of ``key`` among finished rows, rounded as the table shows it (ties all win)."""
    vals = [round(a[key], digits) for a in aggs if a and a["finished"] and a.get(key) is not None]
    return max(vals) if vals else None


def _cell_text(agg: Optional[dict], rule: str, best_acc: Optional[float] = None,
               best_auroc: Optional[float] = None) -> list[str]:
    """The columns of one noise group for one method; the setting's winners (``best_*``) in bold."""
    if agg is None:
        return ["not in grid"] + [""] * (N_COLUMNS - 1)
    if not agg["finished"]:
        status = "failed" if "failed" in agg["statuses"] else ("running" if "running" in agg["statuses"] else "…")
        return [status] + [""] * (N_COLUMNS - 1)
    acc = agg["test_acc"]
    head = _bold(_pct(acc), acc is not None and round(acc, 4) == best_acc)
    if acc is not None and agg.get("test_acc_rules") and agg["test_acc_rules"] != [rule]:
        head += f" ({', '.join(agg['test_acc_rules'])})"  # this method's cells were not measured the grid's way
    if agg["seeds"] > 1:
        head += f" (±{100 * (agg['test_acc_std'] or 0):.2f}, n={agg['finished']})"
    tuned = ("—" if agg.get("fine_tuned_best_test_acc") is None else
             f"{_pct(agg['fine_tuned_best_test_acc'])} / {_pct(agg['fine_tuned_last_test_acc'])}")
    probe = _pct(agg.get("probe_best_test_acc"))
    sel = ("—" if agg["selection_precision"] is None else
           f"{agg['selection_precision']:.3f} / {agg['selection_recall']:.3f} / {agg['selection_f1']:.3f}")
    whole = agg.get("selection_clean_set_f1")
    if whole is not None and abs(whole - agg["selection_f1"]) > 5e-4:
        sel += f" (clean set F1 {whole:.3f})"
    auroc = "—" if agg["auroc"] is None else _bold(f"{agg['auroc']:.3f}", round(agg["auroc"], 3) == best_auroc)
    t = agg["time_train"]
    return [head, tuned, probe, f"{t:.1f}" if t < 10 else f"{t:.0f}", sel, auroc]


def results_markdown(results: dict) -> str:
    """The TURN paper's table layout, one table per (data, backbone); each setting's winners in bold."""
    spec, table = results["spec"], results["table"]
    index = {(a["data"], a["backbone"], a["noise"], a["method"]): a for a in table}
    c = results["counts"]
    common = {k: v for k, v in spec.items() if k not in GRID_KEYS}
    rule = headline_rule(spec)
    what = ("the test accuracy at the epoch the noisy validation split selects, within the phase whose model the "
            "method delivers" if rule != "last epoch" else
            "the last epoch's test accuracy of the model the method delivers (the grid has no validation split)")
    lines = ["# noisyft bench results", "",
             f"{c['done']} of {len(results['cells'])} cells finished"
             + "".join(f", {c[s]} {s}" for s in ("failed", "running", "pending") if c[s]) + ".",
             f"Common settings: `{json.dumps(common, sort_keys=True)}`; seeds: {spec['seeds']}.", "",
             f"Acc ({rule}): {what} (%, mean over seeds); **bold**: the setting's best accuracy and best AUROC. "
             "FT best / last: the fine-tuned model's best and last test accuracy over its fine-tuning epochs. "
             "LP best: the linear probe's best epoch (for a method that fine-tunes, a model it does not deliver; "
             "shown because the papers report best-over-epochs). "
             "Time: wall seconds of the method itself, feature extraction excluded (features are cached and shared). "
             "Selection: precision / recall / F1 of the last selection step against the true labels "
             "(of the samples trained on; where that is a subsample, the detector's whole clean set's F1 follows). "
             "AUROC: the label-issue ranking against the truly wrong labels.", ""]
    for data in spec["data"]:
        for backbone in spec["backbones"]:
            lines += [f"## {data} · {backbone}", ""]
            header = ["Method"]
            for noise in spec["noises"]:
                n = noise or "given labels"
                header += [f"{n} acc ({rule})", f"{n} FT best / last", f"{n} LP best", f"{n} time (s)",
                           f"{n} sel. P / R / F1", f"{n} AUROC"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            best = {}
            for noise in spec["noises"]:
                aggs = [index.get((data, backbone, noise, m)) for m in spec["methods"]]
                best[noise] = (_winners(aggs, "test_acc", 4), _winners(aggs, "auroc", 3))
            for method in spec["methods"]:
                row = [method]
                for noise in spec["noises"]:
                    row += _cell_text(index.get((data, backbone, noise, method)), rule, *best[noise])
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    failed = [r for r in results["cells"] if r["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""] + [f"- `{r['cell']}`: {r.get('error', '')}" for r in failed] + [""]
    return "\n".join(lines)


def write_results(bench_dir: str | Path, results: dict) -> None:
    bench_dir = Path(bench_dir)
    write_json(bench_dir / "results.json", results)
    write_text(bench_dir / "results.md", results_markdown(results))
