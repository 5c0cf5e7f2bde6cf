"""CIFAR-10N / CIFAR-100N human labels as the training labels of cifar10:PATH / cifar100:PATH.

The label files are written here the way the published ones are (``torch.save`` of a dict of
numpy arrays), in both numpy's 2.x and 1.x pickle spellings; a file naming anything but numpy
arrays is refused without running it.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from noisyft import api
from noisyft.data import load_data
from noisyft.data.readers.cifarn import read_label_file
from noisyft.errors import UserError
from tests.conftest import cli_error
from tests.test_every_dataset import TINY, write_cifar10, write_cifar100


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """(cifar10 spec, its 200 training labels, cifar100 spec, its 200 training labels)."""
    root = tmp_path_factory.mktemp("cifarn")
    spec10, _ = write_cifar10(root / "c10")
    spec100, _ = write_cifar100(root / "c100")
    return spec10, np.tile(np.arange(10), 20), spec100, np.tile(np.arange(100), 2)


def _noisy(clean: np.ndarray, k: int, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flip = rng.random(len(clean)) < rate
    return np.where(flip, (clean + rng.integers(1, k, len(clean))) % k, clean)


def _cifar10n_file(path, clean: np.ndarray) -> dict:
    arrays = {"clean_label": clean, "aggre_label": _noisy(clean, 10, 0.1, 1), "worse_label": _noisy(clean, 10, 0.4, 2),
              **{f"random_label{k}": _noisy(clean, 10, 0.2, 2 + k) for k in (1, 2, 3)}}
    torch.save(arrays, path)
    return arrays


def test_cifar10n_worse_labels_train_a_run_with_the_clean_labels_as_truth(cifar, tmp_path):
    spec, clean, _, _ = cifar
    arrays = _cifar10n_file(tmp_path / "CIFAR-10_human.pt", clean)
    res = api.fit(data=spec, labels=f"cifar10n:worse:{tmp_path / 'CIFAR-10_human.pt'}", out=str(tmp_path / "run"), **TINY)
    labels = pd.read_csv(res.run_dir / "labels.csv")
    assert (labels["given_label"].to_numpy() == arrays["worse_label"]).all()
    assert (labels["true_label"].to_numpy() == clean).all()
    info = json.loads((res.run_dir / "data.json").read_text())
    assert info["human_labels"] == "cifar10n:worse"
    assert info["human_label_noise"] == pytest.approx(np.mean(arrays["worse_label"] != clean))
    issues = pd.read_csv(res.run_dir / "label_issues.csv")
    assert issues["is_truly_wrong"].sum() == (arrays["worse_label"] != clean).sum()  # precision/recall have their truth


@pytest.mark.parametrize("kind,key", [("aggre", "aggre_label"), ("random2", "random_label2"), ("random_label3", "random_label3"),
                                      ("clean", "clean_label")])
def test_every_cifar10n_kind_selects_its_array(cifar, tmp_path, kind, key):
    spec, clean, _, _ = cifar
    arrays = _cifar10n_file(tmp_path / "h.pt", clean)
    splits = load_data(spec, labels_csv=f"cifar10n:{kind}:{tmp_path / 'h.pt'}")
    assert (splits.train.labels == arrays[key]).all() and (splits.train.true_labels == clean).all()


def test_cifar100n_noisy_labels(cifar, tmp_path):
    _, _, spec, clean = cifar
    noisy = _noisy(clean, 100, 0.4, 0)
    torch.save({"clean_label": clean, "noisy_label": noisy, "noisy_coarse_label": clean // 5}, tmp_path / "h.pt")
    splits = load_data(spec, labels_csv=f"cifar100n:noisy:{tmp_path / 'h.pt'}")
    assert (splits.train.labels == noisy).all() and (splits.train.true_labels == clean).all()
    with pytest.raises(UserError, match="coarse labels name 20 superclasses"):
        load_data(spec, labels_csv=f"cifar100n:noisy_coarse:{tmp_path / 'h.pt'}")


def _rewrite_pickle(src, dst, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for n in zi.namelist():
            data = zi.read(n)
            zo.writestr(n, data.replace(old, new) if n.endswith("data.pkl") else data)


def test_numpy1_pickles_legacy_files_and_tensor_files_are_read(tmp_path):
    y = np.arange(6) % 3
    torch.save({"worse_label": y}, tmp_path / "np2.pt")
    # the published files were written with numpy 1.x, whose pickles name numpy.core.multiarray
    _rewrite_pickle(tmp_path / "np2.pt", tmp_path / "np1.pt", b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in zipfile.ZipFile(tmp_path / "np1.pt").read("np2/data.pkl")
    torch.save({"worse_label": y}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"worse_label": torch.as_tensor(y)}, tmp_path / "tensors.pt")
    for name in ("np2.pt", "np1.pt", "legacy.pt", "tensors.pt"):
        got = read_label_file(tmp_path / name)["worse_label"]
        assert (np.asarray(got) == y).all(), name


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_label_file_that_would_run_code_is_refused_and_not_run(cifar, tmp_path, capsys):
    spec, clean, _, _ = cifar
    marker = tmp_path / "ran"
    torch.save({"worse_label": clean, "x": _Payload(str(marker))}, tmp_path / "evil.pt")
    err = cli_error(["fit", "--data", spec, "--labels", f"cifar10n:worse:{tmp_path / 'evil.pt'}",
                     "--out", str(tmp_path / "run")], capsys)
    assert "refusing to read CIFAR-N label file" in err and "posix.mkdir" in err
    assert not marker.exists()
    # legacy (pre-zip) format: same refusal
    torch.save({"x": _Payload(str(marker))}, tmp_path / "evil_legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="refusing"):
        read_label_file(tmp_path / "evil_legacy.pt")
    assert not marker.exists()


def test_bad_cifarn_inputs_are_one_line_errors(cifar, tmp_path, capsys):
    spec10, clean, spec100, _ = cifar
    f = tmp_path / "h.pt"
    torch.save({"clean_label": clean, "worse_label": clean}, f)
    cases = [
        (spec10, f"cifar10n:bogus:{f}", "unknown cifar10n label kind 'bogus'"),
        (spec10, "cifar10n:worse", "no label file given"),
        (spec10, f"cifar10n:worse:{tmp_path / 'missing.pt'}", "not found; CIFAR-N label files are published at github.com/UCSC-REAL"),
        (spec10, f"cifar10n:aggre:{f}", "has no 'aggre_label' (it holds: clean_label, worse_label)"),
        (spec100, f"cifar10n:worse:{f}", "cifar10n labels belong to --data cifar10:PATH"),
    ]
    short = tmp_path / "short.pt"
    torch.save({"worse_label": clean[:50]}, short)
    cases.append((spec10, f"cifar10n:worse:{short}", "holds 50 labels but the training set has 200 images"))
    shifted = tmp_path / "shifted.pt"
    torch.save({"worse_label": clean, "clean_label": np.roll(clean, 1)}, shifted)
    cases.append((spec10, f"cifar10n:worse:{shifted}", "clean_label disagrees with the cifar10 batches at 200 of 200"))
    big = tmp_path / "big.pt"
    torch.save({"worse_label": np.where(np.arange(200) == 7, 10, clean)}, big)
    cases.append((spec10, f"cifar10n:worse:{big}", r"worse_label[7] = 10 is outside 0..9"))
    notdict = tmp_path / "list.pt"
    torch.save([1, 2], notdict)
    cases.append((spec10, f"cifar10n:worse:{notdict}", "it holds a list, not the dict"))
    for data, labels, want in cases:
        err = cli_error(["fit", "--data", data, "--labels", labels, "--out", str(tmp_path / "run")], capsys)
        assert want in err, (labels, err)


def test_a_garbled_label_file_is_a_one_line_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02}q\x00X\x0b")  # a pickle cut short
    with pytest.raises(UserError, match="cannot read CIFAR-N label file .*junk.pt"):
        read_label_file(tmp_path / "junk.pt")
