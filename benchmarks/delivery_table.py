"""consensus's delivered checkpoint, last epoch unless validation clearly prefers an earlier one, against the
arg-max of noisy validation (the rule before) and against every other method's committed cells.

Reads a bench folder of ``consensus`` cells run with the rule (``delivered_epoch`` in their summaries; each epoch's
``val_true_acc``, the validation split's accuracy against its true labels, goes to the JSON only: the arg-max was
chosen on those samples, so it is biased toward the arg-max) and
the committed bench JSONs of the same settings (the other methods' validation-selected test accuracy). Prints a
Markdown table and writes JSON.

    python benchmarks/delivery_table.py --runs runs/bench-64px-delivery \\
        --committed benchmarks/results/bench_cifar10_64px_issue13.json benchmarks/results/bench_cifar10_64px_lownoise.json \\
        --json benchmarks/results/delivery_64px.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def cell_numbers(cell: Path) -> dict:
    """One run: test accuracy (and validation accuracy against the truth) of the delivered, arg-max and last epochs."""
    summary = json.loads((cell / "summary.json").read_text())
    records = [json.loads(x) for x in (cell / "metrics.jsonl").read_text().splitlines()]
    fft = {f"fft:{r['epoch']}": r for r in records if r.get("phase") == "fft" and "test_acc" in r}
    argmax = max(fft.values(), key=lambda r: r["val_acc"])
    last = list(fft.values())[-1]
    delivered = fft[summary["delivered_epoch"]]
    note = [r for r in summary.get("selection", []) if "delivered_epoch" in r][-1]
    return {"noise": summary["noise"], "seed": summary["seed"], "delivered_epoch": summary["delivered_epoch"],
            "argmax_epoch": f"fft:{argmax['epoch']}", "z": note["delivered_z"],
            "val_acc_by_epoch": [r["val_acc"] for r in fft.values()],
            **{f"{name}_{key}": r.get(key) for name, r in (("delivered", delivered), ("argmax", argmax), ("last", last))
               for key in ("test_acc", "val_acc", "val_true_acc")}}


def best_other(committed: dict[str, dict], noise: str) -> tuple[str, float]:
    """The best non-consensus method's mean validation-selected test accuracy at ``noise`` in the committed tables
    (named by method, seeds and, when several tables are given, the table's file)."""
    rows = [(name, r) for name, table in committed.items() for r in table["table"]
            if r["noise"] == noise and not r["method"].startswith("consensus") and r.get("test_acc") is not None]
    name, top = max(rows, key=lambda nr: nr[1]["test_acc"])
    where = f", {name}" if len(committed) > 1 else ""
    return f"{top['method']} ({top['seeds']} seed{'s' if top['seeds'] > 1 else ''}{where})", top["test_acc"]


def committed_consensus(committed: dict[str, dict]) -> dict:
    """(noise, seed) → test accuracy of the committed ``consensus`` cells (the last table given wins)."""
    return {(c["noise"], c["seed"]): c["test_acc"] for table in committed.values() for c in table["cells"]
            if c["method"] == "consensus" and c.get("test_acc") is not None}


def _z(z: float | None) -> str:
    return "–" if z is None else f"{z:+.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="bench folder of consensus cells run with the rule")
    ap.add_argument("--committed", type=Path, nargs="+", required=True,
                    help="committed bench JSONs of the same settings (the other methods; consensus cells to check)")
    ap.add_argument("--json", type=Path, required=True, help="where to write the rows")
    args = ap.parse_args()
    cells = sorted(p for p in (args.runs / "cells").glob("*") if (p / "summary.json").exists())
    runs = [cell_numbers(c) for c in cells]
    committed = {p.stem: json.loads(p.read_text()) for p in args.committed}
    before = committed_consensus(committed)
    same = [abs(r["argmax_test_acc"] - before[(r["noise"], r["seed"])]) < 1e-9
            for r in runs if (r["noise"], r["seed"]) in before]
    print(f"arg-max epoch's test accuracy equal to the committed consensus cell: {sum(same)} of {len(same)} runs "
          f"that have one\n")
    out, order = [], list(dict.fromkeys(r["noise"] for r in runs))
    print("| noise | seeds | delivered (epochs, z) | test acc delivered | arg-max (before) | last | best other "
          "| delivered − best other |")
    print("|---|---|---|---|---|---|---|---|")
    for noise in order:
        rs = sorted((r for r in runs if r["noise"] == noise), key=lambda r: r["seed"])
        m = lambda key: float(np.mean([r[key] for r in rs]))
        sd = lambda key: float(np.std([r[key] for r in rs], ddof=1)) if len(rs) > 1 else 0.0
        other, other_acc = best_other(committed, noise)
        row = {"noise": noise, "seeds": [r["seed"] for r in rs], "runs": rs, "best_other": other,
               "best_other_test_acc": other_acc, **{f"{k}_mean": m(k) for k in (
                   "delivered_test_acc", "argmax_test_acc", "last_test_acc", "delivered_val_true_acc",
                   "argmax_val_true_acc")}, "delivered_test_acc_std": sd("delivered_test_acc"),
               "argmax_test_acc_std": sd("argmax_test_acc")}
        out.append(row)
        picks = ", ".join(f"{r['delivered_epoch']} ({_z(r['z'])})" for r in rs)
        pct = lambda v: f"{100 * v:.1f}"
        print(f"| {noise or 'none'} | {len(rs)} | {picks} | {pct(row['delivered_test_acc_mean'])} ± "
              f"{pct(row['delivered_test_acc_std'])} | {pct(row['argmax_test_acc_mean'])} ± {pct(row['argmax_test_acc_std'])} "
              f"| {pct(row['last_test_acc_mean'])} | {other} {pct(other_acc)} | "
              f"{100 * (row['delivered_test_acc_mean'] - other_acc):+.1f} |")
    print("\n| noise | mean noisy-validation accuracy by fine-tuning epoch (0 = refurbished head) |\n|---|---|")
    for row in out:
        curve = np.mean([r["val_acc_by_epoch"] for r in row["runs"]], axis=0)
        print(f"| {row['noise'] or 'none'} | {' / '.join(f'{100 * v:.1f}' for v in curve)} |")
    args.json.write_text(json.dumps({"rows": out}, indent=1))


if __name__ == "__main__":
    main()
