"""Feature extraction throughput: noisyft's cached-extraction pipeline vs the bare model.

The bare model is ``backbone(x)`` on a ready-made random batch in eval mode,
channels-last, inference mode (the faster layout, after warm-up): the ceiling
for any pipeline. Ours decodes real CIFAR-10 JPEGs from the zip, preprocesses
(resize, crop, normalise) in DataLoader workers and writes the cache. Both run
in the same process, same batch size, one after the other, so the ratio is fair.

    python benchmarks/extraction_speed.py [--n 4096] [--sizes 96 128] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.common import cifar10_zip, md_table, write_results
from noisyft.backbones import create_backbone
from noisyft.data import load_data
from noisyft.features.cache import extract_features
from noisyft.features.loader import default_workers


def bare_throughput(backbone, size: int, batch: int, seconds: float = 15.0) -> float:
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    model = backbone.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - start)


def pipeline_throughput(backbone, source, batch: int, workers: int | None) -> float:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        extract_features(backbone, source, cache_dir=cache, batch_size=batch, num_workers=workers, progress=False)
        return len(source) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="images to extract")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/ours rounds; the median ratio is reported")
    args = ap.parse_args()
    source = load_data(cifar10_zip(), max_train=args.n, test_fraction=0).train.source
    rows = []
    for size in args.sizes:
        backbone = create_backbone("efficientnet_lite0", image_size=size)
        pairs = []
        for _ in range(args.rounds):  # alternate, so a load spike hits both sides alike
            bare = bare_throughput(backbone, size, args.batch_size)
            ours = pipeline_throughput(backbone, source, args.batch_size, None)
            pairs.append((bare, ours, ours / bare))
            print(f"size {size}: bare {bare:.1f} img/s, ours {ours:.1f} img/s, ratio {ours / bare:.3f}", flush=True)
        bare, ours, ratio = sorted(pairs, key=lambda p: p[2])[len(pairs) // 2]
        rows.append({"backbone": "efficientnet_lite0", "size": size, "batch": args.batch_size, "workers": default_workers(),
                     "images": len(source), "bare_img_s": round(bare, 1), "noisyft_img_s": round(ours, 1),
                     "ratio": round(ratio, 3), "all_ratios": " ".join(f"{p[2]:.3f}" for p in pairs)})
    table = md_table(rows, list(rows[0]))
    print(table)
    note = ("Ours: uncached `extract_features` over real CIFAR-10 JPEGs from the zip (decode + resize + normalise in "
            "DataLoader workers, write the cache). Bare: the same backbone on a ready random batch, channels-last, "
            "inference mode. Each size runs `--rounds` alternating bare/ours rounds; the row is the round with the median "
            "ratio (all ratios listed). Target: ratio ≥ 0.9.")
    write_results("extraction_speed", {"rows": rows}, table + "\n\n" + note)


if __name__ == "__main__":
    main()
