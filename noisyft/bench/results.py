"""A bench's results: every cell's headline numbers, the per-setting means over seeds, ``results.json`` and
``results.md`` (the TURN paper's layout; see :mod:`noisyft.bench.grid` for what the table shows)."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.atomic import write_json, write_text
from noisyft.bench.grid import GRID_KEYS, BenchSpec, Cell, CellLock, cell_dir, cell_finished
from noisyft.run.files import METRICS_LOG, SUMMARY
from noisyft.run.rundir import read_jsonl
from noisyft.run.summary import LAST_EPOCH, VAL_SELECTED, accuracy_summary, delivered_block

log = logging.getLogger("noisyft")


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


def accuracy_columns(metrics: list[dict], delivered_epoch: Optional[str] = None) -> dict:
    """A cell's accuracy columns, from its ``metrics.jsonl`` records (see :mod:`noisyft.run.summary`).

    ``test_acc`` is the delivered model's (validation-selected when the run logged validation accuracy,
    else last epoch; ``test_acc_rule`` says which); ``last_test_acc`` / ``val_selected_test_acc`` are the
    delivered phase's; ``fine_tuned_*`` and ``probe_*`` are the ``fft`` and ``lp`` phases' own numbers.
    Computed from the log rather than ``summary.json`` so runs finished by older code tabulate too.
    """
    acc = accuracy_summary(metrics, delivered_epoch)
    delivered = delivered_block(acc) or {}
    row = {"test_acc": acc.get("test_acc"), "test_acc_rule": acc.get("test_acc_rule"),
           "test_acc_epoch": acc.get("test_acc_epoch"), "delivered_phase": acc.get("delivered_phase"),
           "last_test_acc": delivered.get("last_test_acc"), "val_selected_test_acc": delivered.get("val_selected_test_acc"),
           "val_argmax_test_acc": delivered.get("val_argmax_test_acc", delivered.get("val_selected_test_acc"))}
    for block in ("fine_tuned", "probe"):
        b = acc.get(block) or {}
        row.update({f"{block}_best_test_acc": b.get("best_test_acc"), f"{block}_last_test_acc": b.get("last_test_acc")})
    return row


NOISE_KEYS = ("noise_est", "noise_cj", "noise_true", "noise_est_abs_error", "noise_cj_abs_error")


def noise_rate_columns(block: Optional[dict]) -> dict:
    """A cell's overall label-noise rates from ``summary.json``'s ``noise_rate`` (None where a run has none):
    ``noise_est`` (the share the method flags), ``noise_cj`` (cleanlab's confident joint), ``noise_true``, and
    each estimate's absolute error against the truth; ``noise_rate`` keeps the whole block (per class too)."""
    block = block or {}
    overall = lambda key: (block.get(key) or {}).get("overall")
    errors = block.get("abs_error") or {}
    return {"noise_est": overall("estimated"), "noise_cj": overall("confident_joint"), "noise_true": overall("true"),
            "noise_est_abs_error": (errors.get("estimated") or {}).get("overall"),
            "noise_cj_abs_error": (errors.get("confident_joint") or {}).get("overall"), "noise_rate": block or None}


def cell_row(cell: Cell, bench_dir: Path) -> dict:
    """One cell's headline numbers from its metrics log and summary (or its status when it has none)."""
    path = cell_dir(bench_dir, cell)
    row = {"cell": cell.name, **dataclasses.asdict(cell)}
    if cell_finished(path):
        s = json.loads((path / SUMMARY).read_text())
        detection = s.get("detection") or {}
        timings = s.get("timings", {})
        total = float(timings.get("total", 0.0))
        row.update(status="done", **accuracy_columns(read_jsonl(path / METRICS_LOG), s.get("delivered_epoch")),
                   time_total=total, time_train=total - float(timings.get("extraction", 0.0)), timings=timings,
                   realised_noise=s.get("realised_noise"), selection=_last_selection(s.get("selection", [])),
                   selection_curve=selection_curve(s.get("selection", [])),
                   auroc=detection.get("auroc"), issue_f1=detection.get("issue_f1"),
                   precision_at_k=detection.get("precision_at_k"),
                   **noise_rate_columns(s.get("noise_rate")))
    elif (path / "error.txt").exists():
        lines = (path / "error.txt").read_text().strip().splitlines()
        row.update(status="failed", error=lines[-1] if lines else "")
    else:
        lock = CellLock(Path(bench_dir) / "locks" / f"{cell.name}.lock")
        info = lock.holder()
        row.update(status="running" if info and not lock.stale(info) else "pending")
    return row


_MEAN_KEYS = ACC_KEYS + ("time_total", "time_train", "auroc", "issue_f1", "precision_at_k") + NOISE_KEYS


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
    return tabulate(spec, [cell_row(c, Path(bench_dir)) for c in spec.cells()])


def tabulate(spec: BenchSpec, rows: list[dict]) -> dict:
    """The results of ``rows`` (one per cell of ``spec``, from :func:`cell_row` or an earlier results file)."""
    return {"spec": spec.to_dict(), "cells": rows, "table": aggregate(rows),
            "counts": {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "running", "pending")}}


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


N_COLUMNS = 7  # per noise setting: headline accuracy, fine-tuned best / last, probe best, time, selection, AUROC, issue F1


def headline_rule(spec: dict) -> str:
    """The grid's headline accuracy: validation-selected when the grid carves a validation split, else last epoch."""

    return VAL_SELECTED if float(spec.get("val_fraction") or 0) > 0 else LAST_EPOCH


def _bold(text: str, win: bool) -> str:
    return f"**{text}**" if win else text


def _score(value: Optional[float], best: Optional[float]) -> str:
    """A 0–1 score to three decimals, bold where it is the setting's best; a dash where there is none."""
    return "—" if value is None else _bold(f"{value:.3f}", round(value, 3) == best)


def _winners(aggs: list[dict], key: str, digits: int) -> Optional[float]:
    """The best value of ``key`` among finished rows, rounded as the table shows it (ties all win)."""
    vals = [round(a[key], digits) for a in aggs if a and a["finished"] and a.get(key) is not None]
    return max(vals) if vals else None


def _cell_text(agg: Optional[dict], rule: str, best_acc: Optional[float] = None,
               best_auroc: Optional[float] = None, best_f1: Optional[float] = None) -> list[str]:
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
    t = agg["time_train"]
    return [head, tuned, probe, f"{t:.1f}" if t < 10 else f"{t:.0f}", sel, _score(agg["auroc"], best_auroc),
            _score(agg.get("issue_f1"), best_f1)]


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
             f"Acc ({rule}): {what} (%, mean over seeds); **bold**: the setting's best accuracy, AUROC and issue F1. "
             "FT best / last: the fine-tuned model's best and last test accuracy over its fine-tuning epochs. "
             "LP best: the linear probe's best epoch (for a method that fine-tunes, a model it does not deliver; "
             "shown because the papers report best-over-epochs). "
             "Time: wall seconds of the method itself, feature extraction excluded (features are cached and shared). "
             "Selection: precision / recall / F1 of the last selection step against the true labels "
             "(of the samples trained on; where that is a subsample, the detector's whole clean set's F1 follows). "
             "AUROC: the label-issue ranking against the truly wrong labels. "
             "Issue F1: the method's own `is_label_issue` verdicts against the truly wrong labels.", ""]
    for data in spec["data"]:
        for backbone in spec["backbones"]:
            lines += [f"## {data} · {backbone}", ""]
            header = ["Method"]
            for noise in spec["noises"]:
                n = noise or "given labels"
                header += [f"{n} acc ({rule})", f"{n} FT best / last", f"{n} LP best", f"{n} time (s)",
                           f"{n} sel. P / R / F1", f"{n} AUROC", f"{n} issue F1"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            best = {}
            for noise in spec["noises"]:
                aggs = [index.get((data, backbone, noise, m)) for m in spec["methods"]]
                best[noise] = (_winners(aggs, "test_acc", 4), _winners(aggs, "auroc", 3), _winners(aggs, "issue_f1", 3))
            for method in spec["methods"]:
                row = [method]
                for noise in spec["noises"]:
                    row += _cell_text(index.get((data, backbone, noise, method)), rule, *best[noise])
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
            lines += noise_rate_table(spec, index, data, backbone)
    failed = [r for r in results["cells"] if r["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""] + [f"- `{r['cell']}`: {r.get('error', '')}" for r in failed] + [""]
    return "\n".join(lines)


def _noise_text(agg: Optional[dict]) -> str:
    if agg is None or not agg["finished"] or agg.get("noise_est") is None:
        return "—" if agg is not None and agg["finished"] else ""
    text = _pct(agg["noise_est"]) + ("" if agg.get("noise_cj") is None else f" / {_pct(agg['noise_cj'])}")
    return text + ("" if agg.get("noise_true") is None else f" ({_pct(agg['noise_true'])})")


def noise_rate_table(spec: dict, index: dict, data: str, backbone: str) -> list[str]:
    """Markdown lines: the estimated label-noise rate per method and setting (none if no cell has one)."""
    aggs = {(noise, m): index.get((data, backbone, noise, m)) for noise in spec["noises"] for m in spec["methods"]}
    if not any(a and a.get("noise_est") is not None for a in aggs.values()):
        return []
    lines = ["Label-noise rate (% of training labels wrong, mean over seeds): the share the method flags / cleanlab's "
             "confident-joint estimate (the true rate).", "",
             "| Method | " + " | ".join(f"{noise or 'given labels'} noise" for noise in spec["noises"]) + " |",
             "|" + "---|" * (len(spec["noises"]) + 1)]
    for method in spec["methods"]:
        lines.append(f"| {method} | " + " | ".join(_noise_text(aggs[noise, method]) for noise in spec["noises"]) + " |")
    return lines + [""]


def write_results(bench_dir: str | Path, results: dict) -> None:
    bench_dir = Path(bench_dir)
    write_json(bench_dir / "results.json", results)
    write_text(bench_dir / "results.md", results_markdown(results))
