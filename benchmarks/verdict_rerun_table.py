"""``consensus``'s verdicts after a change that leaves training alone: the rerun grid's cells against the same cells
before it, and against every other method's committed cells of the same settings.

Checks cell by cell that the validation-selected test accuracy and the label-issue AUROC did not move (the change
must not touch training), then prints, per setting, the issue F1 and the share flagged before → now (means over
seeds), the realised noise, cleanlab's F1 and the best other method's mean F1. Writes JSON.

    git show 5039a66:benchmarks/results/bench_cifar10_64px_delivery.json > /tmp/bench_cifar10_64px_delivery@5039a66.json
    python benchmarks/verdict_rerun_table.py --before /tmp/bench_cifar10_64px_delivery@5039a66.json \\
        --after benchmarks/results/bench_cifar10_64px_delivery.json \\
        --others benchmarks/results/bench_cifar10_64px_issue13.json benchmarks/results/bench_cifar10_64px_lownoise.json \\
        --name verdict_rerun_64px
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import md_table, write_results  # noqa: E402

METHOD = "consensus"


def cells(path: str, method: str | None = METHOD) -> dict[tuple, dict]:
    """(noise, seed, method) → cell of a bench JSON (only ``method``'s when given)."""
    table = json.loads(Path(path).read_text())
    return {(c["noise"], c["seed"], c["method"]): c for c in table["cells"]
            if c.get("status") == "done" and (method is None or c["method"] == method)}


def unchanged(before: dict, after: dict) -> list[str]:
    """Cells whose accuracy or AUROC moved (or that are missing on one side): what the change must not touch."""
    moved = sorted(set(before) ^ set(after), key=str)
    for key in set(before) & set(after):
        for field in ("test_acc", "auroc"):
            if before[key].get(field) != after[key].get(field):
                moved.append(f"{key} {field}: {before[key].get(field)} → {after[key].get(field)}")
    return [str(m) for m in moved]


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def others_f1(paths: list[str]) -> dict[str, dict[str, float]]:
    """noise → method → mean issue F1 over its seeds, for every method but ``consensus`` in the committed tables."""
    by = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for (noise, _, method), c in cells(path, None).items():
            if not method.startswith(METHOD):
                by[noise][method].append(c.get("issue_f1"))
    return {noise: {m: v for m, f in methods.items() if (v := mean(f)) is not None} for noise, methods in by.items()}


def rows(before: dict, after: dict, others: dict) -> list[dict]:
    out = []
    for noise in dict.fromkeys(k[0] for k in after):
        b = [c for k, c in before.items() if k[0] == noise]
        a = [c for k, c in after.items() if k[0] == noise]
        rest = {m: v for m, v in others.get(noise, {}).items() if m != "cleanlab"}
        top = max(rest, key=rest.get) if rest else None
        out.append({"noise": noise or "none", "seeds": len(a), "realised": mean(c.get("realised_noise") for c in a),
                    "f1_before": mean(c.get("issue_f1") for c in b), "f1_now": mean(c.get("issue_f1") for c in a),
                    "flagged_before": mean(c.get("noise_est") for c in b), "flagged_now": mean(c.get("noise_est") for c in a),
                    "f1_cleanlab": others.get(noise, {}).get("cleanlab"),
                    "best_other": top, "f1_best_other": rest.get(top)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="bench JSON of the cells before the change")
    ap.add_argument("--after", required=True, help="bench JSON of the same cells rerun with it")
    ap.add_argument("--others", nargs="*", default=[], help="committed bench JSONs with the other methods' cells")
    ap.add_argument("--name", required=True, help="results name: benchmarks/results/NAME.json and NAME.md")
    args = ap.parse_args()
    before, after = cells(args.before), cells(args.after)
    moved = unchanged(before, after)
    if moved:
        raise SystemExit("accuracy or AUROC moved, or cells differ:\n" + "\n".join(moved))
    table = rows(before, after, others_f1(args.others or [args.after]))
    text = (f"`{METHOD}`'s verdicts rerun ({args.after}) against the same cells before ({args.before}): "
            f"{len(after)} cells, validation-selected test accuracy and AUROC unchanged in every one. Issue F1 and "
            f"the share flagged are means over seeds; the other methods' F1 from {', '.join(args.others) or args.after}.\n\n"
            + md_table(table, list(table[0])))
    print(text)
    write_results(args.name, {"before": args.before, "after": args.after, "others": args.others,
                              "cells_checked": len(after), "rows": table}, text)


if __name__ == "__main__":
    main()
