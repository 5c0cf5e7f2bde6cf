"""Tiny datasets written in the official layouts of the published sets (Clothing1M, Tiny-ImageNet, ...).

Each writer makes a few class-coloured images per class plus the dataset's own list files under
``root`` and returns ``(the --data spec, what a run must see)`` like the writers in
``test_every_dataset.py``, whose table runs each one end to end.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, label: int, num_classes: int, rng: np.random.Generator, size: int = 24) -> None:
    """A JPEG whose brightness says its class (learnable), with noise so every image differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    level = 40 + 180 * label / max(num_classes - 1, 1)
    px = np.clip(level + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(px).save(path, quality=90)


CLOTHING_CLASSES = ["T-Shirt", "Shirt", "Knitwear"]


def write_clothing1m(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> tuple[str, dict]:
    """Clothing1M: images/<d>/<dd>/<a>,<b>.jpg, key-value label files and key lists (all 0-based ids)."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    (root / "category_names_eng.txt").write_text("\n".join(CLOTHING_CLASSES) + "\n")
    noisy, clean, splits = [], [], {"noisy_train": [], "clean_val": [], "clean_test": []}
    n = 0
    for split, per in (("noisy_train", train_per_class), ("clean_val", 1), ("clean_test", test_per_class)):
        for c in range(len(CLOTHING_CLASSES)):
            for _ in range(per):
                key = f"images/{n % 10}/{n % 100:02d}/{1000 + n},{2000 + n}.jpg"
                write_image(root / key, c, len(CLOTHING_CLASSES), rng)
                splits[split].append(key)
                (noisy if split == "noisy_train" else clean).append(f"{key} {c}")
                n += 1
    clean.append(f"{splits['noisy_train'][0]} 0")  # a training image that also has a clean label
    (root / "noisy_label_kv.txt").write_text("\n".join(noisy) + "\n")
    (root / "clean_label_kv.txt").write_text("\n".join(clean) + "\n")
    for split, keys in splits.items():
        (root / f"{split}_key_list.txt").write_text("\n".join(keys) + "\n")
    return f"clothing1m:{root}", dict(n_train=train_per_class * 3, n_test=test_per_class * 3, classes=CLOTHING_CLASSES)


TINY_WNIDS = ["n02085620", "n01443537", "n01629819"]  # listed unsorted, as wnids.txt is
TINY_NAMES = {"n01443537": "goldfish", "n01629819": "European fire salamander", "n02085620": "Chihuahua"}


def write_tiny_imagenet(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> tuple[str, dict]:
    """tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt + val/images."""
    rng = np.random.default_rng(4)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    order = sorted(TINY_WNIDS)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    words = ["n00001740\tentity"] + [f"{w}\t{TINY_NAMES[w]}, synonym" for w in TINY_WNIDS]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    for w in TINY_WNIDS:
        for k in range(train_per_class):
            write_image(base / "train" / w / "images" / f"{w}_{k}.JPEG", order.index(w), 3, rng)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    ann = []
    for k in range(val_per_class * 3):
        w = order[k % 3]
        write_image(base / "val" / "images" / f"val_{k}.JPEG", order.index(w), 3, rng)
        ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return f"tiny-imagenet:{root}", dict(n_train=train_per_class * 3, n_test=val_per_class * 3,
                                         classes=[TINY_NAMES[w] for w in order])


CUB_FOLDERS = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def write_cub200(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> tuple[str, dict]:
    """CUB_200_2011/: classes.txt, images.txt, image_class_labels.txt, train_test_split.txt, images/<folder>/*.jpg."""
    rng = np.random.default_rng(5)
    base = root / "CUB_200_2011"
    base.mkdir(parents=True)
    images, labels, split = [], [], []
    n = 0
    for c, folder in enumerate(CUB_FOLDERS):
        for k in range(train_per_class + test_per_class):
            n += 1
            rel = f"{folder}/{folder.split('.')[1]}_{k:04d}_{n}.jpg"
            write_image(base / "images" / rel, c, 3, rng)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c + 1}")
            split.append(f"{n} {int(k % 3 != 2)}")  # every third image of a class is a test image
    for name, rows in (("images", images), ("image_class_labels", labels), ("train_test_split", split),
                       ("classes", [f"{c + 1} {f}" for c, f in enumerate(CUB_FOLDERS)])):
        (base / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return f"cub200:{root}", dict(n_train=train_per_class * 3, n_test=test_per_class * 3,
                                  classes=[f.split(".")[1] for f in CUB_FOLDERS])


CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


def cars_annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    """The devkit's ``annotations`` struct array (1×N) of (fname, 1-based class) rows, as scipy writes MATLAB structs."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for k, (fname, cls) in enumerate(rows):
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 1, 20, 20)]
        ann[0, k] = (*box, np.array([[cls]], dtype=np.uint8), np.array([fname]))
    return ann


def write_stanford_cars(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> tuple[str, dict]:
    """stanford_cars/: devkit/cars_meta.mat + cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/, cars_test/."""
    import scipy.io

    rng = np.random.default_rng(6)
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS_CLASSES], dtype=object)})
    for folder, per, annos in (("cars_train", train_per_class, base / "devkit" / "cars_train_annos.mat"),
                               ("cars_test", test_per_class, base / "cars_test_annos_withlabels.mat")):
        rows = [(f"{k + 1:05d}.jpg", k % 3 + 1) for k in range(per * 3)]
        for fname, cls in rows:
            write_image(base / folder / fname, cls - 1, 3, rng)
        scipy.io.savemat(annos, {"annotations": cars_annotations(rows)})
    return f"stanford-cars:{root}", dict(n_train=train_per_class * 3, n_test=test_per_class * 3, classes=CARS_CLASSES)


WEBVISION_CLASSES = 52  # mini-WebVision keeps the first 50


def write_webvision(root: Path, full: bool = False) -> tuple[str, dict]:
    """webvision/: info/{train_filelist_google,train_filelist_flickr,val_filelist,synsets}.txt, google/, flickr/,
    val_images_256/; two Google images and one validation image per class, three Flickr images."""
    base = root / "webvision"
    if not base.exists():
        rng = np.random.default_rng(7)
        (base / "info").mkdir(parents=True)
        k = WEBVISION_CLASSES
        (base / "info" / "synsets.txt").write_text("".join(f"n{c:08d} class{c}, synonym\n" for c in range(k)))
        lists: dict[str, list[str]] = {"train_filelist_google": [], "train_filelist_flickr": [], "val_filelist": []}
        for c in range(k):
            for j in range(2):
                rel = f"google/q{c + 1:04d}/{j:06d}.jpg"
                write_image(base / rel, c, k, rng, size=16)
                lists["train_filelist_google"].append(f"{rel} {c}")
            write_image(base / "val_images_256" / f"val{c:06d}.jpg", c, k, rng, size=16)
            lists["val_filelist"].append(f"val{c:06d}.jpg {c}")
        for c in (0, 1, 51):
            rel = f"flickr/q{c + 1:04d}/000000.jpg"
            write_image(base / rel, c, k, rng, size=16)
            lists["train_filelist_flickr"].append(f"{rel} {c}")
        for name, rows in lists.items():
            (base / "info" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    n = 50 if not full else WEBVISION_CLASSES
    return (f"webvision{'-full' if full else ''}:{root}",
            dict(n_train=2 * n + (3 if full else 0), n_test=n, classes=[f"class{c}" for c in range(n)]))


def write_webvision_full(root: Path) -> tuple[str, dict]:
    return write_webvision(root, full=True)


HF_CLASSES = ["cat", "dog", "bird"]


def hf_splits(train_per_class: int = 4, test_per_class: int = 2) -> dict:
    """A ``datasets.DatasetDict`` (train, test) with an ``img`` Image column and a ``fine_label`` ClassLabel column."""
    import io

    import datasets

    rng = np.random.default_rng(8)
    feats = datasets.Features({"idx": datasets.Value("int64"), "img": datasets.Image(),
                               "fine_label": datasets.ClassLabel(names=HF_CLASSES)})
    out = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        ys = [c for c in range(len(HF_CLASSES)) for _ in range(per)]
        imgs = []
        for c in ys:
            buf = io.BytesIO()
            level = 40 + 180 * c / (len(HF_CLASSES) - 1)
            px = np.clip(level + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(buf, format="PNG")
            imgs.append({"bytes": buf.getvalue(), "path": None})
        out[split] = datasets.Dataset.from_dict({"idx": list(range(len(ys))), "img": imgs, "fine_label": ys},
                                                features=feats)
    return datasets.DatasetDict(out)


def write_hf(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> tuple[str, dict]:
    """A Hugging Face ``save_to_disk`` folder (dataset_dict.json, train/, test/ Arrow files)."""
    hf_splits(train_per_class, test_per_class).save_to_disk(str(root / "hfdata"))
    return f"hf:{root / 'hfdata'}", dict(n_train=train_per_class * 3, n_test=test_per_class * 3, classes=HF_CLASSES)


WDS_CLASSES = ["apple", "pear", "plum"]


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A plain tar of ``(name, bytes)`` members, in order."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def jpeg_bytes(label: int, num_classes: int, rng: np.random.Generator, size: int = 24) -> bytes:
    import io

    level = 40 + 180 * label / max(num_classes - 1, 1)
    px = np.clip(level + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_wds(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> tuple[str, dict]:
    """WebDataset shards: train-000000.tar, train-000001.tar (labels as .cls, then .json) and test-000000.tar,
    with classes.txt beside them."""
    rng = np.random.default_rng(9)
    k = len(WDS_CLASSES)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(WDS_CLASSES) + "\n")
    train = [(f"s{n:05d}", c) for n, c in enumerate(c for c in range(k) for _ in range(train_per_class))]
    half = len(train) // 2
    write_tar(root / "train-000000.tar", [m for key, c in train[:half] for m in (
        (f"{key}.jpg", jpeg_bytes(c, k, rng)), (f"{key}.cls", str(c).encode()))])
    write_tar(root / "train-000001.tar", [m for key, c in train[half:] for m in (
        (f"{key}.json", json.dumps({"label": WDS_CLASSES[c]}).encode()), (f"{key}.jpg", jpeg_bytes(c, k, rng)))])
    test = [(f"t{n:05d}", c) for n, c in enumerate(c for c in range(k) for _ in range(test_per_class))]
    write_tar(root / "test-000000.tar", [m for key, c in test for m in (
        (f"{key}.png", _png(c, k, rng)), (f"{key}.cls", str(c).encode()))])
    spec = f"wds:{root}/train-{{000000..000001}}.tar?test={root}/test-000000.tar"
    return spec, dict(n_train=train_per_class * k, n_test=test_per_class * k, classes=WDS_CLASSES)


def _png(label: int, num_classes: int, rng: np.random.Generator) -> bytes:
    import io

    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(label, num_classes, rng))).save(buf, format="PNG")
    return buf.getvalue()


def write_imagenet_val(root: Path, classes=(0, 1, 50), per_class: int = 2) -> Path:
    """webvision/imagenet/val/<wnid>/*.JPEG beside a WebVision tree (wnids as in its info/synsets.txt)."""
    rng = np.random.default_rng(10)
    folder = root / "webvision" / "imagenet" / "val"
    for c in classes:
        for j in range(per_class):
            write_image(folder / f"n{c:08d}" / f"ILSVRC2012_val_{c * 10 + j:08d}.JPEG", c, WEBVISION_CLASSES, rng, size=16)
    return folder
