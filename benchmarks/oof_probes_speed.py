"""Benchmark: the out-of-fold probes stepped together (:func:`fit_probes`) vs one by one (:func:`fit_probe`).

Side by side in one run, on the same seeded features (N × 1,280 float32, 10 classes, 30 % labels flipped)
and the same stratified folds as :func:`out_of_fold_probs`: wall time (median of ``--rounds``), operations
dispatched to torch (the profiler's aten op count: on an accelerator each is a kernel launch, which is what
these tiny heads' steps cost there) and the largest difference between the two ways' out-of-fold
probabilities. Usage (repository root)::

    python benchmarks/oof_probes_speed.py --n 4501 --rounds 3

Writes ``benchmarks/results/oof_probes_speed.{json,md}``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import md_table, write_results  # noqa: E402
from noisyft.config import OptimConfig  # noqa: E402
from noisyft.methods.linear_probe import fit_probe, fit_probes  # noqa: E402


def data(n: int, dim: int = 1280, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list]:
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    x = rng.normal(0, 1, (classes, dim))[true] * 0.3 + rng.normal(0, 1, (n, dim))
    y = true.copy()
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(0, classes, flip.sum())
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(np.zeros(n), y))
    return torch.tensor(x, dtype=torch.float32), torch.as_tensor(y), folds


def held_out_probs(heads, x: torch.Tensor, folds: list) -> np.ndarray:
    probs = np.zeros((len(x), heads[0].out_features))
    with torch.no_grad():
        for head, (_, held) in zip(heads, folds):
            probs[held] = head(x[torch.as_tensor(held)]).softmax(1).numpy()
    return probs


def dispatched_ops(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4501)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--losses", nargs="+", default=["gce", "ce"])
    a = ap.parse_args()
    x, y, folds = data(a.n)
    train = [t for t, _ in folds]
    rows = []
    for loss in a.losses:
        kw = dict(epochs=a.epochs, optim=OptimConfig(), batch_size=128, seed=3, salt_base=60, loss=loss)
        ways = {"one by one": lambda: [fit_probe(x, y, f, 10, salt=k, **kw) for k, f in enumerate(train)],
                "stepped together": lambda: fit_probes(x, y, train, 10, **kw)}
        probs, secs, ops = {}, {}, {}
        for _ in range(a.rounds):  # alternating, so drift on a shared machine hits both
            for name, fn in ways.items():
                t = time.perf_counter()
                heads = fn()
                secs.setdefault(name, []).append(time.perf_counter() - t)
                probs[name] = held_out_probs(heads, x, folds)
        for name, fn in ways.items():
            ops[name] = dispatched_ops(fn)
        diff = float(np.abs(probs["one by one"] - probs["stepped together"]).max())
        for name in ways:
            rows.append({"loss": loss, "way": name, "seconds": statistics.median(secs[name]), "aten ops": ops[name],
                         "max |Δp|": f"{diff:.1e}"})
        print(md_table(rows[-2:], ["loss", "way", "seconds", "aten ops", "max |Δp|"]), flush=True)
    md = (f"Five out-of-fold probes, {a.n} samples × 1,280 features, 10 classes, {a.epochs} epochs, batch 128, "
          f"AdamW (the defaults), median of {a.rounds} alternating rounds.\n\n"
          + md_table(rows, ["loss", "way", "seconds", "aten ops", "max |Δp|"]))
    write_results("oof_probes_speed", {"n": a.n, "epochs": a.epochs, "rows": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
