"""Where a `noisyft fit` run's seconds go, loader by loader: runs in ONE process, one after another.

Every DataLoader of the engine (training epochs, eval passes) and of the eval-image decoding is timed: its first
batch's latency and its whole pass, with the process's memory mappings, RSS and CUDA reserve at its start; between
runs an empty 8-worker loader's start-up is probed. Running two methods in one process shows what a fresh
process pays once (``benchmarks/results/gpu_warmup_h100.md``: cuDNN's run-time compilation). ``--empty-cache``
(before the methods) hands the CUDA cache back after `consensus`'s detector, to see whether the detector's
allocations slow what follows; ``--no-fixed-shapes`` (before the methods) turns off the engine's one batch shape per
pass on CUDA (``noisyft.features.loader.fixed_shapes``), to time a fresh run with and without it::

    python benchmarks/fit_phases.py $OUT/pair.json consensus ce-fft -- --data .gpudata/cifar10_5k.zip \\
        --noise sym:0.2 --image-size 96 --val-fraction 0.1 --num-workers 8
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import noisyft.engine as engine  # noqa: E402
import noisyft.features.decoded as decoded  # noqa: E402
import noisyft.features.loader as loader  # noqa: E402
from noisyft import cli  # noqa: E402

REC: dict = {"loaders": [], "probes": [], "runs": []}
CURRENT = {"run": None}


def proc_state() -> dict:
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    with open("/proc/self/status") as f:
        rss = next((int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS")), 0)
    reserved = torch.cuda.memory_reserved() // 2 ** 20 if torch.cuda.is_available() else 0
    return {"maps": maps, "rss_mb": rss, "cuda_reserved_mb": reserved, "threads": len(os.listdir("/proc/self/task"))}


class Timed:
    """A DataLoader whose passes are recorded in REC."""

    def __init__(self, dl, kind: str):
        self.dl, self.kind = dl, kind

    def __len__(self) -> int:
        return len(self.dl)

    def __iter__(self):
        t0, first, n, state = time.perf_counter(), None, 0, proc_state()
        for b in self.dl:
            first = time.perf_counter() - t0 if first is None else first
            n += 1
            yield b
        REC["loaders"].append({"run": CURRENT["run"], "kind": self.kind, "workers": self.dl.num_workers,
                               "first_batch_s": first, "total_s": time.perf_counter() - t0, "batches": n, **state})


def timed(kind: str):
    return lambda ds, bs, nw, **kw: Timed(loader.make_loader(ds, bs, nw, **kw), kind)


class _Zeros(Dataset):
    def __len__(self) -> int:
        return 1024

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), i


def probe(tag: str) -> None:
    """Median of three: an 8-worker loader's start to its first batch."""
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        next(iter(DataLoader(_Zeros(), batch_size=64, num_workers=8, prefetch_factor=4)))
        ts.append(time.perf_counter() - t)
    REC["probes"].append({"after": tag, "first_batch_s": sorted(ts)[1], **proc_state()})


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    cut = rest.index("--")
    flags = {"--empty-cache", "--no-fixed-shapes"}
    methods, args = [m for m in rest[:cut] if m not in flags], rest[cut + 1:]
    if "--no-fixed-shapes" in rest[:cut]:
        loader.fixed_shapes = engine.fixed_shapes = lambda device: False
    if "--empty-cache" in rest[:cut]:
        import noisyft.methods.consensus as consensus

        detector = consensus.run_detector

        def then_empty(*a, **kw):
            r = detector(*a, **kw)
            torch.cuda.empty_cache()
            return r
        consensus.run_detector = then_empty
    engine.make_loader, decoded.make_loader = timed("engine"), timed("decode")
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
    probe("start")
    for k, m in enumerate(methods):
        CURRENT["run"] = f"{k}-{m}"
        run_dir = f"/tmp/fit_phases/{os.path.basename(out)}-{k}-{m}"
        t = time.time()
        rc = cli.main(["fit", *args, "--method", m, "--out", run_dir, "--no-progress"])
        timings = json.load(open(f"{run_dir}/summary.json"))["timings"] if rc == 0 else None
        REC["runs"].append({"run": CURRENT["run"], "rc": rc, "wall_s": time.time() - t, "timings": timings})
        probe(CURRENT["run"])
        with open(out, "w") as f:
            json.dump(REC, f, indent=1)
    print("| run | loader | first batch s | pass s | batches |\n|---|---|---|---|---|")
    for r in REC["loaders"]:
        print(f"| {r['run']} | {r['kind']} | {r['first_batch_s'] or 0:.2f} | {r['total_s']:.2f} | {r['batches']} |")
    for r in REC["runs"]:
        print(r["run"], json.dumps({a: round(b, 2) for a, b in (r["timings"] or {}).items()}))


if __name__ == "__main__":
    main()
