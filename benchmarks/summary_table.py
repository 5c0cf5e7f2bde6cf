"""The one-screen summary of a bench grid: each method's validation-selected test accuracy (mean ± std where
several seeds ran) and label-issue AUROC per noise setting, the setting's best in bold, and a mean-accuracy column;
then each named method's per-seed accuracies and issue F1 against a reference method (cleanlab by default).

Reads a bench ``results.json`` (``noisyft bench`` or ``benchmarks/gpu_fill.py``), prints Markdown, writes JSON.

    python benchmarks/summary_table.py benchmarks/results/bench_cifar10_96px_gpu.json --per-seed consensus sce-fft \\
        --json /tmp/summary.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def by_seed(results: dict) -> dict:
    """``(method, noise) -> {"acc": [...], "f1": [...]}``: the finished cells' values seed by seed (the means and
    standard deviations are the results file's own ``table``, :func:`noisyft.bench.results.aggregate`)."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in sorted(results["cells"], key=lambda r: r["seed"]):
        if r.get("status") == "done" and r.get("val_selected_test_acc") is not None:
            out[(r["method"], r["noise"])]["acc"].append(100 * r["val_selected_test_acc"])
            out[(r["method"], r["noise"])]["f1"].append(r.get("issue_f1"))
    return out


def label(noise: str | None) -> str:
    """A setting's column name: ``sym:0.2`` → ``sym-0.2``; labels as given (``None`` in a grid) → ``none``."""
    return "none" if noise is None else noise.replace(":", "-")


def summary(results: dict) -> dict:
    """Per method and noise: mean / std (n) accuracy, mean AUROC and issue F1 from the results' ``table``, the seeds'
    values beside them; per noise the best method by accuracy and by AUROC."""
    seeds, noises = by_seed(results), results["spec"]["noises"]
    rows: dict = {}
    for a in results["table"]:
        if not a["finished"] or a.get("val_selected_test_acc") is None:
            continue
        v = seeds[(a["method"], a["noise"])]
        rows.setdefault(a["method"], {})[a["noise"]] = {
            "acc": 100 * a["val_selected_test_acc"], "acc_std": 100 * (a["val_selected_test_acc_std"] or 0.0),
            "n": a["finished"], "auroc": a.get("auroc"), "issue_f1": a.get("issue_f1"),
            "acc_by_seed": v["acc"], "f1_by_seed": v["f1"]}
    methods = list(rows)
    best = {n: {k: max((m for m in methods if rows[m].get(n, {}).get(k) is not None),
                       key=lambda m: rows[m][n][k], default=None) for k in ("acc", "auroc")} for n in noises}
    return {"noises": noises, "rows": rows, "best": best}


def markdown(s: dict) -> str:
    """The summary table: ``acc ± std · AUROC`` per setting, bold where best, and the mean accuracy."""
    noises = s["noises"]
    lines = ["| method | " + " | ".join(label(n) for n in noises) + " | mean acc |",
             "|---|" + "---|" * (len(noises) + 1)]
    means = {m: float(np.mean([r[n]["acc"] for n in noises])) if all(n in r for n in noises) else None
             for m, r in s["rows"].items()}
    top = max((m for m in means if means[m] is not None), key=lambda m: means[m], default=None)
    for m, r in s["rows"].items():
        cells = []
        for n in noises:
            c = r.get(n)
            if c is None:
                cells.append("—")
                continue
            acc = f"{c['acc']:.1f}"
            acc = f"**{acc}**" if s["best"][n]["acc"] == m else acc
            acc += f" ± {c['acc_std']:.1f}" if c["n"] > 1 else ""
            au = "—" if c["auroc"] is None else f"{c['auroc']:.3f}"
            au = f"**{au}**" if s["best"][n]["auroc"] == m else au
            cells.append(f"{acc} · {au}")
        mean_acc = "—" if means[m] is None else (f"**{means[m]:.1f}**" if m == top else f"{means[m]:.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {mean_acc} |")
    return "\n".join(lines)


def per_seed(s: dict, methods: list[str], reference: str) -> str:
    """Each named method's accuracies seed by seed, and its mean issue F1 against ``reference``'s (points)."""
    lines = []
    for m in methods:
        r = {n: s["rows"].get(m, {})[n] for n in s["noises"] if n in s["rows"].get(m, {})}
        accs = ", ".join(f"{label(n)} " + " / ".join(f"{a:.1f}" for a in c["acc_by_seed"])
                         for n, c in r.items())
        lines.append(f"- {m}, accuracy per seed: {accs}")
        ref = s["rows"].get(reference, {})
        f1 = [(n, c["issue_f1"], ref.get(n, {}).get("issue_f1")) for n, c in r.items() if c["issue_f1"] is not None]
        if f1:
            lines.append(f"- {m}, issue F1 (vs {reference}): " + ", ".join(
                f"{label(n)} {a:.3f}" + ("" if b is None else f" ({b:.3f}, {100 * (a - b):+.1f})")
                for n, a, b in f1))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a bench results.json")
    ap.add_argument("--per-seed", nargs="*", default=[], help="methods whose per-seed numbers follow the table")
    ap.add_argument("--reference", default="cleanlab", help="the method whose issue F1 the per-seed lines compare to")
    ap.add_argument("--json", help="write the summary here")
    a = ap.parse_args()
    s = summary(json.loads(Path(a.results).read_text()))
    print(markdown(s))
    if a.per_seed:
        print()
        print(per_seed(s, a.per_seed, a.reference))
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
