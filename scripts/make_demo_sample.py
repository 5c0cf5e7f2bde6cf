"""Build a class-balanced sample of the CIFAR-10 JPEG zip, copied byte for byte.

The offline demo's asset (the default)::

    python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip

The fixed 5,000 / 2,000-image set the GPU benchmark grids use (carried to a machine that cannot
hold the whole 65 MB zip; the same set on every machine, so CPU and GPU cells compare)::

    python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip .gpudata/cifar10_5k.zip 500 200

Takes the first N_TRAIN train and N_TEST test JPEGs of each class (by file name).
"""
import sys
import zipfile
from collections import defaultdict

N_TRAIN, N_TEST = 200, 50


def main(src: str, dst: str = "noisyft/assets/cifar10_demo.zip", n_train: int = N_TRAIN, n_test: int = N_TEST) -> None:
    per = defaultdict(list)
    with zipfile.ZipFile(src) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[2].endswith(".jpg"):
                per[(parts[0], parts[1])].append(name)
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as out:
            for (split, cls), names in sorted(per.items()):
                for name in names[: int(n_train) if split == "train" else int(n_test)]:
                    out.writestr(name, z.read(name))


if __name__ == "__main__":
    main(*sys.argv[1:])
