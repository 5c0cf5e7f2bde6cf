"""Per-epoch eval passes: decoding loader vs the in-memory decoded images (``image_cache_mb``).

TURN runs an eval-mode pass over every training image at each selection and over
val/test after each epoch. This times one such pass over real CIFAR-10 JPEGs both
ways in the same process, alternating rounds so a load spike hits both alike:
the loader (decode, resize, normalise in worker processes each pass) and the
decoded uint8 images kept in memory (decoded once, not counted, normalised per
batch). The bare model's forward on ready-made batches of the same images is
the ceiling. It also checks that both paths give identical logits.

    python -m benchmarks.eval_pass_speed [--n 1800] [--sizes 64 96] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import cifar10_zip, md_table, write_results
from noisyft.backbones import create_backbone
from noisyft.backbones.base import Classifier
from noisyft.data import load_data
from noisyft.data.transforms import eval_transform, normalize
from noisyft.features.decoded import decode_images
from noisyft.engine import decoded_logits, image_logits
from noisyft.features.loader import forward_features


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1800, help="images per pass (TURN's training split in the bench grid)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = load_data(cifar10_zip(), max_train=args.n, test_fraction=0).train
    dev, rows = torch.device("cpu"), []
    for size in args.sizes:
        torch.manual_seed(0)
        model = Classifier(create_backbone("efficientnet_lite0", image_size=size), 10).to(memory_format=torch.channels_last)
        pre = model.backbone.preprocess
        decode_s, images = timed(lambda: decode_images(data, pre, batch_size=args.batch_size, progress=False))
        ready = [normalize(pre)(images[i: i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
        loader, memory, bare = [], [], []
        for _ in range(args.rounds):
            bare.append(timed(lambda: [forward_features(model.eval(), x, dev) for x in ready])[0])
            t, a = timed(lambda: image_logits(model, data, eval_transform(pre), device=dev, batch_size=args.batch_size,
                                              progress=False))
            loader.append(t)
            t, b = timed(lambda: decoded_logits(model, images, normalize(pre), device=dev, batch_size=args.batch_size))
            memory.append(t)
            assert torch.equal(a, b), "the two paths disagree"
        lo, me, ba = (statistics.median(t) for t in (loader, memory, bare))
        rows.append({"size": size, "images": len(data), "bare_forward_img_s": round(len(data) / ba),
                     "loader_img_s": round(len(data) / lo), "memory_img_s": round(len(data) / me),
                     "speedup": f"{lo / me:.2f}x", "memory_of_bare": f"{ba / me:.2f}", "decode_once_s": f"{decode_s:.1f}",
                     "memory_MiB": f"{images.numel() / 2 ** 20:.1f}", "identical_logits": True})
    table = md_table(rows, list(rows[0]))
    print(table)
    write_results("eval_pass_speed", {"rows": rows, "args": vars(args)},
                  "One eval-mode pass over real CIFAR-10 training images, EfficientNet-Lite0, batch "
                  f"{args.batch_size}; median of {args.rounds} alternating rounds.\n\n" + table)


if __name__ == "__main__":
    main()
