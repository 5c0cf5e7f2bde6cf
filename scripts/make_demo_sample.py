"""Build a class-balanced sample of the CIFAR-10 JPEG zip, copied byte for byte.

The offline demo's asset (the default)::

    python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip

The fixed 5,000 / 2,000-image set the GPU benchmark grids use (carried to a machine that cannot
hold the whole 65 MB zip; the same set on every machine, so CPU and GPU cells compare)::

    python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip .gpudata/cifar10_5k.zip 500 200

A long-tailed training set (real data is rarely balanced; the test set stays balanced, as in the
long-tailed noisy-label literature): a fifth argument R > 1 gives the k-th class (sorted by name) of C
round(N_TRAIN · R^(−k/(C−1))) training images, from N_TRAIN down to N_TRAIN / R::

    python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip .gpudata/cifar10_lt10.zip 600 100 10

Takes the first N_TRAIN (or the class's long-tailed count) train and N_TEST test JPEGs of each class (by file name).
"""
import sys
import zipfile
from collections import defaultdict

N_TRAIN, N_TEST = 200, 50


def train_counts(classes: list[str], n_train: int, imbalance: float) -> dict[str, int]:
    """Training images per class: n_train each, or an exponential long tail from n_train to n_train / imbalance."""
    last = max(len(classes) - 1, 1)
    return {c: max(1, round(n_train * imbalance ** (-k / last))) for k, c in enumerate(sorted(classes))}


def main(src: str, dst: str = "noisyft/assets/cifar10_demo.zip", n_train: int = N_TRAIN, n_test: int = N_TEST,
         imbalance: float = 1.0) -> None:
    per = defaultdict(list)
    with zipfile.ZipFile(src) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[2].endswith(".jpg"):
                per[(parts[0], parts[1])].append(name)
        counts = train_counts([c for s, c in per if s == "train"], int(n_train), float(imbalance))
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as out:
            for (split, cls), names in sorted(per.items()):
                for name in names[: counts[cls] if split == "train" else int(n_test)]:
                    out.writestr(name, z.read(name))


if __name__ == "__main__":
    main(*sys.argv[1:])
