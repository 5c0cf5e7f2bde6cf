"""``consensus``'s report after a change that leaves training alone: the rerun grid's cells against the same cells
before it, and against every other method's committed cells of the same settings.

Checks cell by cell that the validation-selected test accuracy did not move (the change must not touch training),
then prints, per setting, the issue F1, the share flagged and the label-issue AUROC before → now (means over seeds),
the realised noise, cleanlab's F1, and the best other method's mean F1 and mean AUROC. Writes JSON and Markdown.

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
    """Cells whose accuracy moved (or that are missing on one side): what the change must not touch."""
    moved = sorted(set(before) ^ set(after), key=str)
    for key in set(before) & set(after):
        if before[key].get("test_acc") != after[key].get("test_acc"):
            moved.append(f"{key} test_acc: {before[key].get('test_acc')} → {after[key].get('test_acc')}")
    return [str(m) for m in moved]


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def others(paths: list[str], fields: tuple[str, ...]) -> dict[str, dict[str, dict[str, float]]]:
    """field → noise → method → mean of the field over its seeds, for every method but ``consensus`` in the committed
    tables (each read once)."""
    by = {f: defaultdict(lambda: defaultdict(list)) for f in fields}
    for path in paths:
        for (noise, _, method), c in cells(path, None).items():
            if not method.startswith(METHOD):
                for f in fields:
                    by[f][noise][method].append(c.get(f))
    return {f: {noise: {m: v for m, vals in methods.items() if (v := mean(vals)) is not None}
                for noise, methods in per_noise.items()} for f, per_noise in by.items()}


def best(values: dict[str, float], skip: str | None = None) -> tuple[str | None, float | None]:
    """(method, value) of the highest value, ``skip`` left out."""
    rest = {m: v for m, v in values.items() if m != skip}
    top = max(rest, key=rest.get) if rest else None
    return top, rest.get(top)


def rows(before: dict, after: dict, f1: dict, auroc: dict) -> list[dict]:
    out = []
    for noise in dict.fromkeys(k[0] for k in after):
        b = [c for k, c in before.items() if k[0] == noise]
        a = [c for k, c in after.items() if k[0] == noise]
        top_f1, top_f1_value = best(f1.get(noise, {}), skip="cleanlab")
        top_auroc, top_auroc_value = best(auroc.get(noise, {}))
        row = {"noise": noise or "none", "seeds": len(a), "realised": mean(c.get("realised_noise") for c in a)}
        for field, name in (("issue_f1", "f1"), ("noise_est", "flagged"), ("auroc", "auroc")):
            row.update({f"{name}_before": mean(c.get(field) for c in b), f"{name}_now": mean(c.get(field) for c in a)})
        out.append({**row, "f1_cleanlab": f1.get(noise, {}).get("cleanlab"), "best_other_f1": top_f1,
                    "f1_best_other": top_f1_value, "best_other_auroc": top_auroc, "auroc_best_other": top_auroc_value})
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
        raise SystemExit("accuracy moved, or cells differ:\n" + "\n".join(moved))
    sources = args.others or [args.after]
    theirs = others(sources, ("issue_f1", "auroc"))
    table = rows(before, after, theirs["issue_f1"], theirs["auroc"])
    text = (f"`{METHOD}`'s report rerun ({args.after}) against the same cells before ({args.before}): {len(after)} "
            f"cells, validation-selected test accuracy unchanged in every one. Issue F1, share flagged and AUROC are "
            f"means over seeds; the other methods' from {', '.join(sources)}.\n\n" + md_table(table, list(table[0])))
    print(text)
    write_results(args.name, {"before": args.before, "after": args.after, "others": args.others,
                              "cells_checked": len(after), "rows": table}, text)


if __name__ == "__main__":
    main()
