"""A million images: feature extraction from a synthetic 1,000,000-image source, and one TURN selection step on 1M rows.

The source is generated on the fly (image ``i`` is drawn from a generator seeded by ``i``: the
same pixels every time, nothing stored), labels ``i mod C``. Two phases, each in its own process
so that each peak RSS is its own:

* ``extract``: ``extract_features`` (the feature cache: shards written as they finish, resumable,
  then assembled into one memory-mapped ``features.npy``) with a tiny backbone over the first
  ``--n`` images (default 100,000: the full million takes ~N/throughput on 2 shared cores, so the
  row for 1M is extrapolated linearly from the measured fraction and labelled so). Throughput,
  peak RSS of the main process and of the loader workers, and the cache's size on disk.
* ``select``: the full 1,000,000 rows: features (1M × D float32) written shard by shard into a
  memory-mapped ``.npy`` like the cache's, a linear head's logits over them in batches
  (``head_logits``), per-sample CE, the per-class GMM, the τ threshold and the class-balanced
  subsample (what TURN does each fine-tuning epoch), timed step by step, with the peak RSS.

    python -m benchmarks.million_images [--n 100000] [--size 32] [--backbone test_vit] [--classes 100]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from noisyft.data.base import ImageSource

FULL = 1_000_000


class SyntheticSource(ImageSource):
    """``n`` RGB images made on demand: image ``i`` is a class brightness (label ``i mod C``) plus noise seeded by ``i``."""

    def __init__(self, n: int, size: int = 32, num_classes: int = 100):
        self.n, self.size, self.num_classes = n, size, num_classes
        self.ids = [f"synthetic/{i}" for i in range(n)]  # a real id list, as every reader builds

    def load(self, i: int) -> Image.Image:
        rng = np.random.default_rng(i)
        level = 30 + 190 * (i % self.num_classes) / max(self.num_classes - 1, 1)
        px = rng.integers(-25, 26, (self.size, self.size, 3), dtype=np.int16) + int(level)
        return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))

    def fingerprint(self) -> str:
        return hashlib.sha256(f"synthetic-v1\0{self.n}\0{self.size}\0{self.num_classes}".encode()).hexdigest()


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its waited-for children) peak resident set size in MiB (Linux ru_maxrss is KiB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def rss_now_mb() -> float:
    """This process's resident set size now, in MiB (Linux /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2 ** 20


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def phase_extract(args) -> dict:
    from noisyft.backbones import create_backbone
    from noisyft.features.cache import extract_features
    from noisyft.features.loader import default_workers

    backbone = create_backbone(args.backbone, pretrained=False, image_size=args.size)
    source = SyntheticSource(args.n, args.size, args.classes)
    rss_before = rss_now_mb()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        feats = extract_features(backbone, source, cache_dir=cache, batch_size=args.batch_size,
                                 num_workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        disk = du_mb(Path(cache))
        is_memmap = isinstance(feats, np.memmap)
        shape = feats.shape
    main_peak, worker_peak = peak_rss_mb()
    return {"images": args.n, "dim": int(shape[1]), "seconds": round(seconds, 1), "img_s": round(args.n / seconds, 1),
            "workers": default_workers() if args.workers is None else args.workers,
            "rss_before_mb": round(rss_before), "peak_rss_main_mb": round(main_peak), "peak_rss_worker_mb": round(worker_peak),
            "cache_mb": round(disk, 1), "features_memmap": is_memmap,
            "shard_rows": 8192}


def phase_select(args) -> dict:
    from noisyft.engine import head_logits
    from noisyft.losses import per_sample_ce
    from noisyft.selection import balanced_subsample, fit_per_class_gmm, select_clean

    n, c, dim = FULL, args.classes, args.dim
    rng = np.random.default_rng(0)
    true = np.arange(n) % c
    flip = rng.random(n) < 0.4
    given = np.where(flip, rng.integers(0, c, n), true)
    times = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "features.npy"
        t = time.perf_counter()
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        protos = rng.normal(0, 1, (c, dim)).astype(np.float32)
        for s in range(0, n, 8192):  # shard by shard, as the cache writes them
            rows = np.arange(s, min(n, s + 8192))
            out[rows] = protos[true[rows]] + rng.normal(0, 1.5, (len(rows), dim)).astype(np.float32)
        out.flush()
        del out
        times["write_features_s"] = time.perf_counter() - t
        feats = np.load(path, mmap_mode="r")
        head = torch.nn.Linear(dim, c)
        with torch.no_grad():  # a head that has learnt the class prototypes (as after linear probing)
            head.weight.copy_(torch.as_tensor(protos))
            head.bias.zero_()
        rss_loaded = rss_now_mb()
        t = time.perf_counter()
        logits = head_logits(head, feats, torch.device("cpu"))
        times["head_logits_s"] = time.perf_counter() - t
        t = time.perf_counter()
        losses = per_sample_ce(logits, torch.as_tensor(given)).numpy()
        times["per_sample_ce_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fit = fit_per_class_gmm(losses, given, c)
        times["gmm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        clean = select_clean(fit.clean_prob, 0.6)
        chosen, n_min, _ = balanced_subsample(clean, given, c, np.random.default_rng(1))
        times["select_subsample_s"] = time.perf_counter() - t
    precision = float((given[clean] == true[clean]).mean())
    recall = float(clean[given == true].mean())
    return {"rows": n, "classes": c, "dim": dim, **{k: round(v, 2) for k, v in times.items()},
            "selection_total_s": round(sum(v for k, v in times.items() if k != "write_features_s"), 2),
            "selected_clean": int(clean.sum()), "n_min": int(n_min), "chosen": int(len(chosen)),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "rss_before_selection_mb": round(rss_loaded), "peak_rss_mb": round(peak_rss_mb()[0]),
            "logits_mb": round(logits.numel() * 4 / 2 ** 20)}


def run_phase(phase: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.million_images", "--phase", phase, *argv],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="images actually extracted (the rest is extrapolated)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--backbone", default="test_vit")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--dim", type=int, default=64, help="feature width of the selection phase")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--phase", choices=["extract", "select"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase_extract(args) if args.phase == "extract" else phase_select(args)))
        return
    from benchmarks.common import md_table, write_results

    argv = [a for a in sys.argv[1:]]
    ext = run_phase("extract", argv)
    print("extract", ext, flush=True)
    sel = run_phase("select", argv)
    print("select", sel, flush=True)
    scale = FULL / ext["images"]
    full = {"images": f"{FULL:,} (extrapolated ×{scale:g})", "seconds": round(ext["seconds"] * scale),
            "img_s": ext["img_s"], "cache_mb": round(ext["cache_mb"] * scale, 1),
            "peak_rss_main_mb": f"~{ext['peak_rss_main_mb']} + ids/labels (O(N))"}
    rows = [{**ext, "images": f"{ext['images']:,} (measured)"}, full]
    cols = ["images", "seconds", "img_s", "workers", "peak_rss_main_mb", "peak_rss_worker_mb", "cache_mb", "dim"]
    table1 = md_table(rows, cols)
    table2 = md_table([sel], ["rows", "classes", "dim", "head_logits_s", "per_sample_ce_s", "gmm_s", "select_subsample_s",
                              "selection_total_s", "selected_clean", "precision", "recall", "rss_before_selection_mb",
                              "peak_rss_mb", "logits_mb"])
    print(table1 + "\n\n" + table2)
    note = (f"**Extraction** (`extract_features`, the feature cache as a run uses it) of a synthetic source generated on "
            f"the fly ({args.size} px RGB, image i drawn from a generator seeded by i; nothing stored), backbone "
            f"`{args.backbone}` (random init, {ext['dim']}-d features), batch {args.batch_size}. The first row is "
            f"measured on {ext['images']:,} images; the 1,000,000 row is **extrapolated linearly** from it (time and "
            f"cache size scale with N; the run's memory does not, except the id list and the O(N) label/loss arrays). "
            f"The cache is written in shards of 8,192 rows (each renamed into place when done, so a killed run resumes "
            f"at the next shard) and assembled shard by shard into one memory-mapped `features.npy`: at no point are "
            f"all features in memory, let alone twice (peak main-process RSS stays that of the model and one shard). "
            f"On disk the shards and the assembled file coexist for the moment of assembly (2× the final size "
            f"briefly); the final size is N × D × 4 bytes.\n\n"
            f"**Selection** on the full {FULL:,} rows ({sel['classes']} classes, 40% symmetric noise, {sel['dim']}-d "
            f"features in a memory-mapped `.npy` written in 8,192-row shards): a linear head's logits over the memmap "
            f"in batches, per-sample CE, the batched per-class GMM (`fit_per_class_gmm`), τ = 0.6 and the "
            f"class-balanced subsample: one TURN selection step. Everything per sample is an O(N) array "
            f"(logits N × C float32 = {sel['logits_mb']} MiB is the largest).")
    write_results("million_images", {"extract": ext, "extract_full_extrapolated": full, "select": sel},
                  table1 + "\n\n" + table2 + "\n\n" + note)


if __name__ == "__main__":
    main()
