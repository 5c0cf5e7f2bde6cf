"""Every dataset reader and every noise kind end to end, on tiny files written in each dataset's own format.

``DATASETS_CASES`` writes tiny data for each registered dataset (CIFAR python batches,
Fashion-MNIST IDX files, an image tree; the packaged demo is capped) and ``NOISE_CASES``
names, for each noise kind, the data it is injected into and what its labels must show.
Both tables must name exactly the registered datasets / noise kinds, so a new reader or a
new kind cannot go untested. Also here: the dataset-dependent method defaults apply in a
run (ELR's β 0.9 / λ 7 on CIFAR-100).
"""
from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from noisyft import api
from noisyft.data import DATASETS
from noisyft.data.noise import NOISE_KINDS
from tests.dataset_layouts import (write_clothing1m, write_cub200, write_hf, write_stanford_cars, write_tiny_imagenet,
                                   write_wds, write_webvision, write_webvision_full)

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=32, num_workers=0, progress=False,
            lp_optim="adamw:1e-2:1e-5", method="ce-lp", epochs_lp=1, seed=0)


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator, shape=(32, 32, 3)) -> np.ndarray:
    """One brightness level per class plus noise: learnable, and distinct per image (instance noise needs that)."""
    level = 40 + 180 * labels / max(num_classes - 1, 1)
    return np.clip(level.reshape(-1, *[1] * len(shape)) + rng.normal(0, 20, (len(labels), *shape)), 0, 255).astype(np.uint8)


def _cifar_rows(labels: np.ndarray, num_classes: int, rng) -> np.ndarray:
    """N×3072 uint8 rows in CIFAR's plane order (R, G, B planes of 32×32)."""
    return _images(labels, num_classes, rng).transpose(0, 3, 1, 2).reshape(len(labels), -1)


def write_cifar10(root: Path) -> tuple[str, dict]:
    rng, d = np.random.default_rng(0), root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for k in range(1, 6):  # 5 batches × 4 images per class = 200 training images
        y = np.tile(np.arange(10), 4)
        (d / f"data_batch_{k}").write_bytes(pickle.dumps({b"data": _cifar_rows(y, 10, rng), b"labels": y.tolist()}))
    y = np.tile(np.arange(10), 2)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _cifar_rows(y, 10, rng), b"labels": y.tolist()}))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10]}))
    return f"cifar10:{root}", dict(n_train=200, n_test=20, classes=CIFAR10)


def write_cifar100(root: Path) -> tuple[str, dict]:
    from noisyft.data.noise import CIFAR100_CLASSES

    rng, d = np.random.default_rng(1), root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, per in (("train", 2), ("test", 1)):
        y = np.tile(np.arange(100), per)
        rows = _cifar_rows(y, 100, rng)
        (d / name).write_bytes(pickle.dumps({b"data": rows, b"fine_labels": y.tolist(), b"coarse_labels": [0] * len(y)}))
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [c.encode() for c in CIFAR100_CLASSES]}))
    return f"cifar100:{d}", dict(n_train=200, n_test=100, classes=list(CIFAR100_CLASSES))


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path) -> tuple[str, dict]:
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    for split, per in (("train", 3), ("t10k", 1)):
        y = np.tile(np.arange(10), per)
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(_idx(_images(y, 10, rng, shape=(28, 28))))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(_idx(y))
    return f"fashion-mnist:{root}", dict(n_train=30, n_test=10, classes=FASHION)


def write_folder(root: Path) -> tuple[str, dict]:
    from tests.conftest import write_splits

    write_splits(root, 10, 3)
    return f"folder:{root}", dict(n_train=30, n_test=9, classes=["blue", "green", "red"])


def packaged_demo(root: Path) -> tuple[str, dict]:
    classes = sorted(CIFAR10)  # class folders, read in name order
    return "demo", dict(n_train=30, n_test=10, classes=classes, max_train=30, max_test=10)


# registered dataset → writes tiny data in its format; returns (the --data spec, what the run must see)
DATASETS_CASES = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "fashion-mnist": write_fashion_mnist,
    "folder": write_folder,
    "demo": packaged_demo,
    "clothing1m": write_clothing1m,
    "tiny-imagenet": write_tiny_imagenet,
    "cub200": write_cub200,
    "stanford-cars": write_stanford_cars,
    "webvision": write_webvision,
    "webvision-full": write_webvision_full,
    "hf": write_hf,
    "wds": write_wds,
}


def test_dataset_table_names_every_registered_reader():
    assert set(DATASETS_CASES) == set(DATASETS.names()), (
        f"DATASETS_CASES must name exactly the registered datasets {DATASETS.names()} (in {__file__})")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """name → (spec, expectations), written once per module."""
    root = tmp_path_factory.mktemp("every-dataset")
    return {name: write(root / name) for name, write in DATASETS_CASES.items()}


def _fit(spec: str, out: Path, **kw) -> api.FitResult:
    return api.fit(data=spec, out=str(out), **{**TINY, **kw})


@pytest.mark.parametrize("name", list(DATASETS_CASES))
def test_dataset_reader_runs_end_to_end(data, tmp_path, name):
    spec, want = data[name]
    caps = {k: want[k] for k in ("max_train", "max_test") if k in want}
    res = _fit(spec, tmp_path / "run", noise="sym:0.5", **caps)
    d = res.run_dir
    assert json.loads((d / "data.json").read_text())["dataset"] == name
    assert (res.summary["n_train"], res.summary["n_test"]) == (want["n_train"], want["n_test"])
    labels = pd.read_csv(d / "labels.csv")
    assert len(labels) == want["n_train"] and (labels["given_class"] == np.array(want["classes"], dtype=object)[labels["given_label"]]).all()
    assert set(labels["true_label"]) == set(range(len(want["classes"])))  # every class is there
    issues = pd.read_csv(d / "label_issues.csv")
    assert len(issues) == want["n_train"] and issues["is_label_issue"].dtype == bool
    _, meta = api.load_model(d)
    assert meta["classes"] == want["classes"]
    assert 0 <= res.summary["test_acc"] <= 1


# --- noise kinds ------------------------------------------------------------------


def _asym_cifar10(labels: pd.DataFrame) -> None:
    flips = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    changed = labels[labels["given_label"] != labels["true_label"]]
    assert len(changed) > 0
    assert all(flips[CIFAR10[t]] == CIFAR10[g] for t, g in zip(changed["true_label"], changed["given_label"]))


def _asym_block(labels: pd.DataFrame) -> None:
    changed = labels[labels["given_label"] != labels["true_label"]]
    t = changed["true_label"].to_numpy()
    assert len(changed) > 0 and (changed["given_label"].to_numpy() == 5 * (t // 5) + (t + 1) % 5).all()


def _any(labels: pd.DataFrame) -> None:
    assert ((labels["given_label"] != labels["true_label"]).mean()) > 0


# noise kind → (dataset it is injected into, rate, check of the given labels against the true ones)
NOISE_CASES = {
    "sym": ("folder", 0.6, _any),
    "symflip": ("folder", 0.4, _any),
    "asym": ("cifar10", 0.4, _asym_cifar10),
    "asym-block": ("cifar10", 0.4, _asym_block),
    "inst": ("folder", 0.4, _any),
    "inst-ptd": ("folder", 0.4, _any),
}


def test_noise_table_names_every_kind():
    assert set(NOISE_CASES) == set(NOISE_KINDS), f"NOISE_CASES must name exactly {NOISE_KINDS} (in {__file__})"


@pytest.mark.parametrize("kind", list(NOISE_CASES))
def test_noise_kind_is_injected_and_recorded(data, tmp_path, kind):
    name, rate, check = NOISE_CASES[kind]
    spec, want = data[name]
    res = _fit(spec, tmp_path / "run", noise=f"{kind}:{rate}")
    d = res.run_dir
    noise = json.loads((d / "noise.json").read_text())
    labels = pd.read_csv(d / "labels.csv")
    assert (noise["kind"], noise["rate"], noise["num_samples"]) == (kind, rate, want["n_train"])
    wrong = labels["given_label"] != labels["true_label"]
    assert noise["realised_rate"] == pytest.approx(wrong.mean())
    counts = np.zeros((len(want["classes"]),) * 2, dtype=int)
    np.add.at(counts, (labels["true_label"], labels["given_label"]), 1)
    assert noise["transition_matrix"] == counts.tolist()
    check(labels)
    issues = pd.read_csv(d / "label_issues.csv")
    assert issues["is_truly_wrong"].sum() == wrong.sum()  # the table knows which labels were changed


# --- dataset-dependent method defaults --------------------------------------------


def test_elr_uses_the_cifar100_defaults_in_a_run(data, tmp_path):
    """On CIFAR-100, elr-lp without settings trains exactly as with β 0.9 / λ 7, not as with the general 0.7 / 3."""
    spec, _ = data["cifar100"]

    def losses(tag: str, **extra) -> list[float]:
        res = _fit(spec, tmp_path / tag, method="elr-lp", epochs_lp=2, noise="sym:0.4", extra=extra)
        return [m["train_loss"] for m in map(json.loads, (res.run_dir / "metrics.jsonl").read_text().splitlines())]

    default, paper, general = losses("default"), losses("paper", beta=0.9, lam=7.0), losses("general", beta=0.7, lam=3.0)
    assert default == paper and default != general
