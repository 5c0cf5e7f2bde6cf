"""CPU cost per image of decoding + preprocessing (previous and current path) against the forward pass, load-independent.

Wall-clock throughput ratios (``extraction_speed``) need a quiet machine; CPU time does not: each
side is timed with ``time.process_time`` in one thread (torch set to 1 thread), so other jobs on
the machine barely change it. Per image:

* ``decode_old``: PIL decode (``Image.open`` → ``to_rgb``) + torchvision's Resize → CenterCrop →
  ToImage → ToDtype → Normalize (the previous worker path);
* ``decode_new``: ``decode_image`` (libjpeg-turbo via ``torchvision.io.decode_jpeg``) + ``EvalResize``
  (one PIL call, uint8) in the worker, plus its share of the batched normalisation in the main process;
* ``forward``: the bare channels-last forward of ``efficientnet_lite0`` per image (batch 128).

On 2 cores with the forward using both and the decoding worker taking its share, extraction runs
at about ``forward / (forward + decode)`` of the bare speed: the ``predicted ratio`` columns.

    python -m benchmarks.decode_cost [--n 512] [--sizes 64 96 128 224]
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import cifar10_zip, md_table, write_results
from noisyft.backbones import create_backbone
from noisyft.data import load_data
from noisyft.data.sources import decode_image, to_rgb
from noisyft.data.transforms import EvalResize, Preprocess, eval_transform, normalize


def cpu_ms(fn, n: int, reps: int = 3) -> float:
    """Best of ``reps`` CPU milliseconds per call of ``fn(i)`` over ``i < n``."""
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t) / n * 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 224])
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    source = load_data(cifar10_zip(), max_train=args.n, test_fraction=0).train.source
    zf = source.parent._zip()
    raw = [zf.read(source.parent.ids[int(j)]) for j in source.indices]

    def pil_decode(i):
        with Image.open(io.BytesIO(raw[i])) as im:
            return to_rgb(im)

    rows = []
    for size in args.sizes:
        pre = Preprocess(size=size)
        old_tf, resize, norm = eval_transform(pre), EvalResize(size, pre.interpolation), normalize(pre)
        decode_old = cpu_ms(lambda i: old_tf(pil_decode(i)), len(raw))
        worker_new = cpu_ms(lambda i: resize(decode_image(io.BytesIO(raw[i]), "x")), len(raw))
        batch = torch.stack([resize(decode_image(io.BytesIO(raw[i % len(raw)]), "x")) for i in range(args.batch_size)])
        norm_ms = cpu_ms(lambda i: norm(batch), 5) / args.batch_size
        decode_new = worker_new + norm_ms
        backbone = create_backbone("efficientnet_lite0", image_size=size).eval().to(memory_format=torch.channels_last)
        x = torch.randn(args.batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            backbone(x)
            forward = cpu_ms(lambda i: backbone(x), 2 if size >= 224 else 4, reps=2) / args.batch_size
        rows.append({"size": size, "forward_ms": round(forward, 3), "decode_old_ms": round(decode_old, 3),
                     "decode_new_ms": round(decode_new, 3), "of_which_batch_normalise_ms": round(norm_ms, 3),
                     "predicted_ratio_old": round(forward / (forward + decode_old), 3),
                     "predicted_ratio_new": round(forward / (forward + decode_new), 3)})
        print(rows[-1], flush=True)
    table = md_table(rows, list(rows[0]))
    print(table)
    note = ("CPU milliseconds per image, one thread each (`time.process_time`; best of 3 passes over "
            f"{len(raw)} real CIFAR-10 JPEGs, 32×32, from the zip). `decode_old`: PIL decode + torchvision's per-image "
            "transforms (the previous worker path). `decode_new`: libjpeg-turbo decode (`torchvision.io.decode_jpeg`) + "
            "`EvalResize` in the worker + its share of the batched normalisation (the current path; the same "
            "numbers, tests/test_extraction_pipeline.py). `forward`: efficientnet_lite0, channels-last, batch "
            f"{args.batch_size}, per image. `predicted_ratio` = forward / (forward + decode): the share of the bare "
            "speed that extraction keeps when decoding and the forward pass share the cores.")
    write_results("decode_cost", {"rows": rows}, table + "\n\n" + note)


if __name__ == "__main__":
    main()
