"""The noise model with many classes and few samples per class, where no real data of that shape is at hand here.

CIFAR-100(N), CUB-200 and Stanford Cars have 100–200 classes and 30–60 training images per class; the committed grids
have 10 classes and 60–450 per class. This measures, on synthetic features with a known truth, what `consensus`'s
noise model makes of such a set: the out-of-fold probes (the detector's label-blind component, with the method's own
loss ``oof_loss``, folds and 20 epochs) give the class distributions, ``fit_noise_model`` the noise process T and temperature, ``label_posterior`` the targets. Reported per
setting: the accuracy of the given labels, of the probes' prediction and of the posterior's arg-max (the training
targets before fine-tuning), the noise rate the model expects against the truth, and the issue F1 of the posterior
verdict against cleanlab's ``find_label_issues`` on the same probabilities.

Features: one Gaussian centre per class in 64 dimensions (scale ``--sep``), unit noise around it — separability chosen
so that 10 classes × 300 reach a probe accuracy like the 96 px grid's detector (~0.9) and 100 × 30 a weak one (~0.5).
Noise: ``sym`` (uniform to another class) or ``pair`` (to the nearest other centre: structured). Prints a table,
writes JSON.

    python benchmarks/many_classes.py --json benchmarks/results/many_classes.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from noisyft.config import OptimConfig  # noqa: E402
from noisyft.methods import consensus_detect as cd  # noqa: E402
from noisyft.methods.consensus import ConsensusSettings  # noqa: E402

DEFAULTS = ConsensusSettings()


def blobs(per_class: int, classes: int, flip: float, seed: int, sep: float, kind: str):
    """(features (N, 64) float32, given labels, true labels) of Gaussian clusters with ``flip`` of the labels wrong."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(0, 1, (classes, 64)) * sep
    feats = centres[true] + rng.normal(0, 1, (len(true), 64))
    given = true.copy()
    idx = rng.choice(len(true), int(round(flip * len(true))), replace=False)
    if kind == "sym":
        given[idx] = (true[idx] + rng.integers(1, classes, len(idx))) % classes
    else:
        d = ((centres[:, None] - centres[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        given[idx] = d.argmin(1)[true[idx]]
    return torch.tensor(feats, dtype=torch.float32), given, true


def one(classes: int, per_class: int, kind: str, flip: float, seed: int, sep: float) -> dict:
    """One synthetic set through the probes and the noise model; the row of the table."""
    feats, given, true = blobs(per_class, classes, flip, seed, sep, kind)
    wrong = given != true
    p = cd.oof_probs(feats, given, classes, folds=DEFAULTS.folds, epochs=20, optim=OptimConfig("adamw", 1e-2, 1e-4),
                     batch_size=128, seed=seed, loss=DEFAULTS.oof_loss)
    model = cd.fit_noise_model(p, given)
    post = cd.label_posterior(model.calibrated(p), given, model.transition)
    ours, theirs = cd.posterior_issues(post, given), cd.issue_flags(p, given)
    rows = np.arange(len(given))
    return {"classes": classes, "per_class": per_class, "noise": f"{kind}:{flip}", "seed": seed,
            "realised": float(wrong.mean()), "acc_given": float((~wrong).mean()),
            "acc_prediction": float((p.argmax(1) == true).mean()), "acc_posterior": float((post.argmax(1) == true).mean()),
            "expected_noise": float(1 - post[rows, given].mean()), "tau": model.tau,
            "share_flagged": float(ours.mean()), "f1_posterior": float(f1_score(wrong, ours)) if wrong.any() else None,
            "share_cleanlab": float(theirs.mean()), "f1_cleanlab": float(f1_score(wrong, theirs)) if wrong.any() else None}


def mean_of(rows: list[dict], key: str) -> str:
    """The seeds' mean of ``key`` to three decimals; a dash where no seed has it (no wrong label to score)."""
    vals = [r[key] for r in rows if r[key] is not None]
    return f"{np.mean(vals):.3f}" if vals else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["10x300", "10x30", "100x30", "100x60", "200x25"],
                    help="CLASSESxPER_CLASS")
    ap.add_argument("--noises", nargs="+", default=["sym:0.0", "sym:0.2", "sym:0.4", "pair:0.2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--sep", type=float, default=0.5)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    print("| classes × per class | noise | given acc | prediction acc | posterior acc | expected noise (true) | "
          "flagged | F1 posterior | F1 cleanlab |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in a.shapes:
        classes, per_class = map(int, shape.split("x"))
        for noise in a.noises:
            kind, flip = noise.split(":")
            rs = [one(classes, per_class, kind, float(flip), s, a.sep) for s in a.seeds]
            rows += rs
            cols = ("acc_given", "acc_prediction", "acc_posterior", "expected_noise", "realised", "share_flagged",
                    "f1_posterior", "f1_cleanlab")
            given, pred, post, expected, realised, flagged, ours, theirs = (mean_of(rs, k) for k in cols)
            print(f"| {classes} × {per_class} | {noise} | {given} | {pred} | {post} | {expected} ({realised}) | "
                  f"{flagged} | {ours} | {theirs} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            "machine": platform.processor() or platform.machine(),
                                            "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
