"""Design study: the batch size of ``consensus``'s linear heads on cached features (``head_batch_size``).

On a GPU the detector's ~2,500 tiny-head steps cost their kernel launches, not their arithmetic
(``gpu_warmup_h100.md`` §3), so four times the batch would take about half the detector's seconds off a run.
This measures what it costs the detector, on the training truth and the noisy validation split only (no test
accuracy): per setting, seed and variant, the detector's seconds, its fine-tuning targets' and prediction's
accuracy against the true training labels, its label-issue AUROC and verdict F1, and the refurbished head's
accuracy on the noisy validation split (and, for the record, on its true labels).

A variant is ``none`` (the run's ``--batch-size``, the default), ``B`` (``head_batch_size=B``, the same learning
rate) or ``BxF`` (``head_batch_size=B`` and the heads' learning rate times F). Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/head_batch.py --noises sym:0.2 asym:0.4 --seeds 0 1 \\
        --variants none 512 512x2 [--lp-optim sgd:1e-2:1e-3] --json benchmarks/results/head_batch.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import md_table, stamp  # noqa: E402
from benchmarks.new_method_design import DATA, GRID, NOISES, auroc, f1, make_ctx  # noqa: E402


def cell(noise: str, seed: int, variant: str, lp_optim: str | None) -> dict:
    """One detector run (and its refurbished head) under ``variant``, scored on the training truth."""
    from noisyft.engine import head_logits
    from noisyft.methods.consensus import ConsensusSettings, head_batch, refurbish_head, run_detector, start_targets

    size, _, factor = variant.partition("x")
    ctx = make_ctx(data=DATA, noise=noise, seed=seed, method="consensus", **GRID,
                   **({"lp_optim": lp_optim} if lp_optim else {}))
    if factor:
        ctx = dataclasses.replace(ctx, lp_optim=dataclasses.replace(ctx.lp_optim, lr=ctx.lp_optim.lr * float(factor)))
    ctx.feature_tensor("train"), ctx.feature_tensor("val")  # extraction (cached) outside the detector's time
    s = ConsensusSettings(head_batch_size=None if size == "none" else int(size))
    y, true = ctx.train.labels, ctx.train.true_labels
    t = time.perf_counter()
    det = run_detector(ctx, s)
    t_detector = time.perf_counter() - t
    targets = start_targets(y, det.w, det.probs, s, det.noise)
    head = refurbish_head(ctx.feature_tensor("train"), y, targets, epochs=ctx.cfg.epochs_lp, optim=ctx.lp_optim,
                          batch_size=head_batch(ctx, s), seed=seed, init=det.head)
    wrong, val_pred = y != true, head_logits(head, ctx.features("val"), ctx.device).argmax(1).numpy()
    return dict(noise=noise, seed=seed, variant=variant, lp_optim=lp_optim or "backbone default",
                t_detector=t_detector, acc_targets=float((np.asarray(targets).argmax(1) == true).mean()),
                acc_prediction=float((det.probs.argmax(1) == true).mean()), auroc=auroc(det.score, wrong),
                f1_verdict=f1(det.issues, wrong), head_noisy_val=float((val_pred == ctx.val.labels).mean()),
                head_true_val=float((val_pred == ctx.val.true_labels).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noises", nargs="+", default=NOISES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=["none", "512", "512x2"])
    ap.add_argument("--lp-optim", default=None, help="the heads' optimiser in place of the backbone's (e.g. sgd:1e-2:1e-3)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    rows = []
    for seed in a.seeds:
        for noise in a.noises:
            for variant in a.variants:
                rows.append(cell(noise, seed, variant, a.lp_optim))
                print(json.dumps(rows[-1]), flush=True)
                Path(a.json).write_text(json.dumps({**stamp(), "rows": rows}, indent=1))
    print(md_table(rows, ["noise", "seed", "variant", "t_detector", "acc_targets", "acc_prediction", "auroc",
                          "f1_verdict", "head_noisy_val"]))


if __name__ == "__main__":
    main()
