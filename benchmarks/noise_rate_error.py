"""The noise-rate estimate against the truth, from the committed bench results (no training).

Reads ``benchmarks/results/bench_*.json``. Cells whose runs report the ``noise_rate`` block (every run
since the noise rate was told to the user: the consensus grids on the 64 px CIFAR-10 setting and
Fashion-MNIST) give the exact numbers: the share the method flags (``estimated``), cleanlab's
confident-joint estimate (``confident_joint``), the true rate of the training labels, and the absolute
errors, overall and averaged over classes. Older cells (TURN and the baselines) predate that block;
for the methods whose selection *is* their whole clean set, the flagged share is reconstructed as
``1 − selected / n_train`` from the last selection epoch (``n_train`` = ``max_train`` less the
validation share) against the realised noise of the data: an approximation, labelled so. TURN's
selection is the class-balanced subsample of its clean set, not the clean set, so it is left out of
the reconstruction.

    python -m benchmarks.noise_rate_error
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, md_table, write_results

SUBSAMPLED = {"turn"}  # their selection is a class-balanced subsample of the clean set
FIXED_SHARE = {"small-loss-lp", "small-loss-fft"}  # they keep a set fraction: no estimate at all


def setting(path: Path, spec: dict) -> str:
    data = " ".join(spec.get("data", []))
    name = "Fashion-MNIST" if "fashion" in data else "CIFAR-10" if "cifar10" in data else data
    size = spec.get("image_size")
    gpu = " (GPU grid)" if "gpu" in path.stem else ""
    return f"{name} {size} px{gpu}" if size else f"{name}{gpu}"


def exact_rows(path: Path, bench: dict) -> list[dict]:
    rows = []
    for c in bench["cells"]:
        nr = c.get("noise_rate")
        if not nr or "true" not in nr:
            continue
        err = nr.get("abs_error", {})
        rows.append({"setting": setting(path, bench["spec"]), "method": c["method"], "noise": c["noise"],
                     "seed": c.get("seed"), "true": nr["true"]["overall"], "estimated": nr["estimated"]["overall"],
                     "est_abs_error": err.get("estimated", {}).get("overall"),
                     "est_class_mean_abs_error": err.get("estimated", {}).get("per_class_mean"),
                     "confident_joint": (nr.get("confident_joint") or {}).get("overall"),
                     "cj_abs_error": (err.get("confident_joint") or {}).get("overall"),
                     "cj_class_mean_abs_error": (err.get("confident_joint") or {}).get("per_class_mean"),
                     "file": path.name})
    return rows


def approx_rows(path: Path, bench: dict) -> list[dict]:
    spec = bench["spec"]
    if "max_train" not in spec:
        return []
    n_train = spec["max_train"] - int(round(spec.get("val_fraction", 0) * spec["max_train"]))
    rows = []
    for c in bench["cells"]:
        curve = c.get("selection_curve") or []
        if c.get("noise_rate") or not curve or c["method"] in SUBSAMPLED | FIXED_SHARE or c.get("realised_noise") is None:
            continue
        est = 1 - curve[-1]["selected"] / n_train
        rows.append({"setting": setting(path, spec), "method": c["method"], "noise": c["noise"], "seed": c.get("seed"),
                     "true (realised)": c["realised_noise"], "estimated (1 - selected/n)": round(est, 4),
                     "abs_error": round(abs(est - c["realised_noise"]), 4), "file": path.name})
    return rows


def summarise(rows: list[dict], key: str) -> list[dict]:
    out = []
    for s in sorted({r["setting"] for r in rows}):
        sub = [r for r in rows if r["setting"] == s and r.get(key) is not None]
        if sub:
            out.append({"setting": s, "cells": len(sub), f"mean_{key}": float(np.mean([r[key] for r in sub])),
                        f"max_{key}": float(np.max([r[key] for r in sub]))})
    return out


def main() -> None:
    exact, approx = [], []
    for path in sorted(RESULTS.glob("bench_*.json")):
        bench = json.loads(path.read_text())
        if "cells" not in bench or "spec" not in bench:
            continue
        exact += exact_rows(path, bench)
        approx += approx_rows(path, bench)
    cols = ["setting", "method", "noise", "true", "estimated", "est_abs_error", "est_class_mean_abs_error",
            "confident_joint", "cj_abs_error", "cj_class_mean_abs_error"]
    t_exact = md_table(exact, cols)
    t_sum = md_table(summarise(exact, "est_abs_error") , ["setting", "cells", "mean_est_abs_error", "max_est_abs_error"])
    t_cj = md_table(summarise(exact, "cj_abs_error"), ["setting", "cells", "mean_cj_abs_error", "max_cj_abs_error"])
    t_approx = md_table(approx, ["setting", "method", "noise", "true (realised)", "estimated (1 - selected/n)", "abs_error"])
    t_asum = md_table(summarise(approx, "abs_error"), ["setting", "cells", "mean_abs_error", "max_abs_error"])
    md = ("## Exact: runs that report the noise-rate block\n\n"
          "`estimated`: the share of training labels the method flags; `confident_joint`: cleanlab's estimate from the "
          "method's probabilities; `true`: the real rate of the training labels; errors are absolute (rate points), "
          "overall and averaged over classes.\n\n" + t_exact + "\n\nMean / max absolute error of the flagged share:\n\n"
          + t_sum + "\n\nMean / max absolute error of the confident joint:\n\n" + t_cj +
          "\n\n## Approximate: older runs without the block\n\nThe TURN and baseline grids (`bench_cifar10.json`, "
          "`bench_fmnist.json`, `bench_cifar10_96px*.json`) predate the noise-rate block. For the methods whose selection "
          "is their whole clean set, the flagged share is reconstructed as 1 − selected/n_train (last selection epoch) "
          "and compared with the realised noise of the data (which includes the 10% validation share, so both sides are "
          "approximate). TURN is left out (it selects a class-balanced subsample of its clean set), and so is small-loss "
          "(it keeps a fixed share of each class, so its selection size is its setting, not an estimate); methods without a "
          "selection (the plain losses) have no estimate. Rerunning those grids records the exact block.\n\n"
          + (t_approx + "\n\n" + t_asum if approx else "(no such cells)"))
    print(md)
    write_results("noise_rate_error", {"exact": exact, "approximate": approx}, md)


if __name__ == "__main__":
    main()
