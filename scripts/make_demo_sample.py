"""Build noisyft/assets/cifar10_demo.zip: a small real CIFAR-10 sample for the offline demo.

Run once from the repo root: ``python scripts/make_demo_sample.py ../shared/data/cifar10-jpeg.zip``.
Takes the first N_TRAIN train and N_TEST test JPEGs of each class (by file name),
copied byte for byte, so the sample is reproducible from the source zip.
"""
import sys
import zipfile
from collections import defaultdict

N_TRAIN, N_TEST = 200, 50


def main(src: str, dst: str = "noisyft/assets/cifar10_demo.zip") -> None:
    per = defaultdict(list)
    with zipfile.ZipFile(src) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[2].endswith(".jpg"):
                per[(parts[0], parts[1])].append(name)
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as out:
            for (split, cls), names in sorted(per.items()):
                for name in names[: N_TRAIN if split == "train" else N_TEST]:
                    out.writestr(name, z.read(name))


if __name__ == "__main__":
    main(*sys.argv[1:])
