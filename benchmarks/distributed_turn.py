"""Benchmark: TURN with 2 processes (``torchrun --nproc_per_node 2``, gloo) against 1 process, same data and settings.

Data: the packaged CIFAR-10 demo (2,000 train / 500 test images) with 60% symmetric noise,
efficientnet_lite0 (pretrained, offline) at a small input size. Configurations are
PROCESSESxTHREADS: ``1x2`` (one process, both cores as torch threads) against ``2x1`` (two
processes, one thread each) for time, and ``1x1`` as the reference of the agreement check
(the same per-process arithmetic as ``2x1``). No decoding workers (``--num-workers 0``) and a
fresh feature cache each, so extraction is measured too. Reported per phase: the run's own ``timings.json`` (rank 0's wall
time per phase) and the whole command's wall time; and whether the results agree: the feature
cache entries (bytes), the first selection, the per-epoch test accuracy and selection counts,
and the largest weight difference of the final models.

    python benchmarks/distributed_turn.py [--image-size 64] [--epochs-lp 10] [--epochs-fft 2] [--configs 1x2 2x1 1x1]

Writes ``benchmarks/results/distributed_turn.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

PHASES = ["extraction", "lp", "selection", "fft", "evaluation"]


def run(world: int, threads: int, base: Path, args) -> dict:
    out, cache = base / f"run-{world}x{threads}", base / f"cache-{world}x{threads}"
    env = {**os.environ, "NOISYFT_CACHE": str(cache), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    fit = ["fit", "--data", "demo", "--method", "turn", "--noise", "sym:0.6", "--seed", "0", "--image-size",
           str(args.image_size), "--epochs-lp", str(args.epochs_lp), "--epochs-fft", str(args.epochs_fft),
           "--batch-size", str(args.batch_size), "--num-workers", "0", "--no-progress", "--out", str(out)]
    cmd = [sys.executable, "-m", "noisyft", *fit] if world == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--standalone", "-m", "noisyft", *fit]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{world}-process run failed:\n{r.stderr[-3000:]}")
    timings = json.loads((out / "timings.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    return {"world": world, "threads_per_rank": threads, "wall_s": wall, **{f"{p}_s": timings.get(p, 0.0) for p in PHASES},
            "out": out, "cache": cache, "summary": summary}


def agreement(a: dict, b: dict) -> dict:
    import numpy as np
    from safetensors.torch import load_file

    def feats(cache):
        return {p.parent.name: p.read_bytes() for p in sorted(Path(cache).rglob("features.npy"))}

    def jsonl(run, name):
        return [json.loads(x) for x in (Path(run) / name).read_text().splitlines()]

    wa, wb = load_file(str(a["out"] / "model.safetensors")), load_file(str(b["out"] / "model.safetensors"))
    sa, sb = jsonl(a["out"], "selection.jsonl"), jsonl(b["out"], "selection.jsonl")
    ma = [m for m in jsonl(a["out"], "metrics.jsonl") if m["phase"] == "fft"]
    mb = [m for m in jsonl(b["out"], "metrics.jsonl") if m["phase"] == "fft"]
    la, lb = np.load(a["out"] / "losses" / "epoch1.npy"), np.load(b["out"] / "losses" / "epoch1.npy")
    return {"features_identical": feats(a["cache"]) == feats(b["cache"]),
            "first_selection_identical": sa[0] == sb[0] and bool(np.array_equal(la, lb)),
            "selected_per_epoch": [[x["selected"] for x in sa], [x["selected"] for x in sb]],
            "fft_test_acc": [[m.get("test_acc") for m in ma], [m.get("test_acc") for m in mb]],
            "max_weight_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wa),
            "label_issue_auroc": [a["summary"].get("detection", {}).get("auroc"),
                                  b["summary"].get("detection", {}).get("auroc")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs-lp", type=int, default=10)
    ap.add_argument("--epochs-fft", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--configs", nargs="+", default=["1x2", "2x1", "1x1"],
                    help="PROCESSESxTHREADS each; the first two are timed against each other, and the 2-process run "
                         "is checked against the 1-process run with as many threads per process (same arithmetic)")
    args = ap.parse_args()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="noisyft-dist-bench-"))
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs]
    results = [run(w, t, base, args) for w, t in configs]
    multi = next(r for r in results if r["world"] > 1)
    same = next((r for r in results if r["world"] == 1 and r["threads_per_rank"] == multi["threads_per_rank"]), results[0])
    agree = agreement(same, multi)
    cols = ["world", "threads_per_rank", "wall_s", *[f"{p}_s" for p in PHASES]]
    rows = [{k: r[k] for k in cols} for r in results]
    table = common.md_table(rows, cols)
    text = (f"# TURN: 1 process vs {multi['world']} processes on the CIFAR-10 demo\n\n"
            f"`noisyft fit --data demo --method turn --noise sym:0.6 --seed 0 --image-size {args.image_size} "
            f"--epochs-lp {args.epochs_lp} --epochs-fft {args.epochs_fft} --batch-size {args.batch_size} --num-workers 0` "
            f"(efficientnet_lite0, pretrained), alone and under `torchrun --nproc_per_node N --standalone` (gloo); "
            f"configurations are processes x torch threads per process, each with a fresh feature cache. "
            f"Phase seconds are rank 0's `timings.json`; `wall_s` is the whole command (startup included).\n\n"
            f"{table}\n\nAgreement of the {multi['world']}-process run with the 1-process run of "
            f"{same['threads_per_rank']} thread(s) (the same per-process arithmetic; with other thread counts the "
            f"CPU kernels add in another order and nothing is bit-identical, even between two 1-process runs):\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in agree.items()) + "\n"
            f"\nLoad average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()} (other jobs share "
            f"the 2 cores; a process with more torch threads than free cores slows down far more than one with "
            f"fewer).\n")
    print(text)
    common.write_results("distributed_turn", {"args": vars(args), "rows": rows, "agreement": agree,
                                               "load_before": load_before, "load_after": os.getloadavg()}, text)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
