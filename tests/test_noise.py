"""Tests for synthetic label noise (noisyft.data.noise) and the CIFAR-100 tables."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from noisyft.data.base import ImageSource, LabeledSet
from noisyft.data.cifar100 import (
    COARSE_CLASSES,
    FINE_CLASSES,
    FINE_TO_COARSE,
    SUPERCLASSES,
    SUPERCLASS_NEXT,
    superclass_next_indices,
)
from noisyft.data.noise import (
    CIFAR10_CLASSES,
    NOISE_KINDS,
    NoiseSpec,
    apply_noise,
    asymmetric_noise,
    asymmetric_targets,
    instance_noise,
    parse_noise,
    raw_pixel_matrix,
    symmetric_noise,
    transition_matrix,
)
from noisyft.errors import UserError

# The coarse label of each fine label, as stored in the CIFAR-100 python batches
# (widely reproduced "sparse2coarse" table) — an independent check of the transcription.
BATCH_COARSE_LABELS = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


class ArraySource(ImageSource):
    """A tiny in-memory source: images from an (N, H, W, C) or (N, H, W) uint8 array."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self.ids = [str(i) for i in range(len(images))]

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i]).convert("RGB")

    def raw(self, i: int) -> np.ndarray:
        return self.images[i]

    def fingerprint(self) -> str:
        return "test"


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(y)


def offdiag(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(len(m), dtype=bool)]


# --------------------------------------------------------------------------- symmetric


def test_sym_realised_rate_and_uniform_offdiagonal():
    C, per, r = 10, 2000, 0.6
    y = balanced_labels(C, per)
    z = symmetric_noise(y, C, r, np.random.default_rng(1))
    assert abs(np.mean(z != y) - r * (1 - 1 / C)) < 0.015  # 0.54, not 0.6
    m = transition_matrix(y, z, C)
    # each off-diagonal cell expects per * r / C = 120 samples
    off = offdiag(m)
    assert np.all(np.abs(off - per * r / C) < 50), off
    # diagonal: kept (1 - r) plus drawn-own-class r / C
    assert np.all(np.abs(np.diag(m) - per * (1 - r + r / C)) < 80)


def test_symflip_realised_rate_never_true_class():
    C, per, r = 10, 2000, 0.6
    y = balanced_labels(C, per)
    sym = symmetric_noise(y, C, r, np.random.default_rng(3))
    flip = symmetric_noise(y, C, r, np.random.default_rng(3), exclude_true=True)
    assert abs(np.mean(flip != y) - r) < 0.015
    # Same seed → same Bernoulli mask: every sample sym changed, symflip changed too,
    # and symflip changes every selected sample (its draw never returns the true class).
    assert np.all(flip[sym != y] != y[sym != y])
    assert np.sum(flip != y) > np.sum(sym != y)
    m = transition_matrix(y, flip, C)
    assert np.all(np.abs(offdiag(m) - per * r / (C - 1)) < 50)
    assert np.all(np.abs(np.diag(m) - per * (1 - r)) < 80)


def test_symflip_needs_two_classes_and_rate_checked():
    with pytest.raises(UserError):
        symmetric_noise(np.zeros(5, int), 1, 0.5, np.random.default_rng(0), exclude_true=True)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        symmetric_noise(np.zeros(5, int), 3, 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError):
        symmetric_noise(np.array([0, 3]), 3, 0.5, np.random.default_rng(0))


# --------------------------------------------------------------------------- asymmetric CIFAR-10


def test_asym_cifar10_by_name_any_order():
    names = list(CIFAR10_CLASSES)
    order = np.random.default_rng(5).permutation(10)
    classes = [names[i].upper() for i in order]  # shuffled order, different case
    idx = {n.lower(): i for i, n in enumerate(classes)}
    C, per, r = 10, 2000, 0.4
    y = balanced_labels(C, per)
    z = asymmetric_noise(y, classes, r, np.random.default_rng(2))
    edges = {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    m = transition_matrix(y, z, C)
    expected_nonzero = {(idx[a], idx[b]) for a, b in edges}
    nonzero = {(int(i), int(j)) for i, j in zip(*np.nonzero(m)) if i != j}
    assert nonzero == expected_nonzero  # only map edges, cat↔dog both ways
    for a, b in edges:
        assert abs(m[idx[a], idx[b]] / per - r) < 0.035
    mapped = np.isin(y, [idx[a] for a, _ in edges])
    assert abs(np.mean(z[mapped] != y[mapped]) - r) < 0.015
    assert np.all(z[~mapped] == y[~mapped])
    assert abs(np.mean(z != y) - r * 5 / 10) < 0.015


def test_asym_auto_rejects_other_names():
    with pytest.raises(UserError) as e:
        asymmetric_noise([0, 1, 2], ["a", "b", "c"], 0.3, np.random.default_rng(0))
    msg = str(e.value)
    assert "CIFAR-10" in msg and "CIFAR-100" in msg and "asym-block" in msg and "sym" in msg
    with pytest.raises(UserError):
        asymmetric_targets(list(CIFAR10_CLASSES), "cifar100")


# --------------------------------------------------------------------------- CIFAR-100 tables


def test_cifar100_tables():
    assert len(SUPERCLASSES) == 20 and len(COARSE_CLASSES) == 20
    fines = [f for _, fs in SUPERCLASSES for f in fs]
    assert all(len(fs) == 5 for _, fs in SUPERCLASSES)
    assert len(fines) == 100 and len(set(fines)) == 100
    assert list(FINE_CLASSES) == sorted(fines)
    assert FINE_CLASSES[0] == "apple" and FINE_CLASSES[1] == "aquarium_fish" and FINE_CLASSES[99] == "worm"
    assert FINE_CLASSES.index("beaver") == 4 and FINE_CLASSES.index("dolphin") == 30
    assert COARSE_CLASSES[0] == "aquatic_mammals" and COARSE_CLASSES[19] == "vehicles_2"
    assert list(FINE_TO_COARSE) == BATCH_COARSE_LABELS
    nxt = superclass_next_indices()
    assert nxt[4] == 30  # beaver → dolphin
    assert SUPERCLASS_NEXT["whale"] == "beaver"  # cyclic within the row
    assert SUPERCLASS_NEXT["tractor"] == "lawn_mower"
    assert sorted(nxt) == list(range(100))  # a permutation
    assert all(FINE_TO_COARSE[i] == FINE_TO_COARSE[j] and i != j for i, j in enumerate(nxt))


def test_asym_cifar100_superclass_map():
    C, per, r = 100, 300, 0.4
    y = balanced_labels(C, per)
    z = asymmetric_noise(y, list(FINE_CLASSES), r, np.random.default_rng(7))
    m = transition_matrix(y, z, C)
    nxt = superclass_next_indices()
    flips = [(int(i), int(j)) for i, j in zip(*np.nonzero(m)) if i != j]
    assert len(flips) == 100  # every class flips, each to exactly one target
    for i, j in flips:
        assert FINE_TO_COARSE[i] == FINE_TO_COARSE[j]
        assert j == nxt[i]
    assert m[4, 30] > 0 and m[4, 0] == 0  # beaver(4) → dolphin(30), not apple(0)
    assert abs(np.mean(z != y) - r) < 0.015
    assert np.all(np.abs(np.diag(m) / per - (1 - r)) < 0.15)


def test_asym_block_is_not_superclass_map():
    target_block, v1 = asymmetric_targets(list(FINE_CLASSES), "block")
    target_super, v2 = asymmetric_targets(list(FINE_CLASSES), "auto")
    assert (v1, v2) == ("block", "cifar100")
    assert target_block[4] == 0 and target_block[0] == 1 and target_block[99] == 95
    assert target_super[4] == 30
    assert np.mean(target_block == target_super) < 0.2
    # block works for any C divisible by 5, whatever the names
    classes = [f"c{i}" for i in range(15)]
    y = balanced_labels(15, 400)
    z = asymmetric_noise(y, classes, 0.3, np.random.default_rng(0), variant="block")
    flips = {(int(i), int(j)) for i, j in zip(*np.nonzero(transition_matrix(y, z, 15))) if i != j}
    assert flips == {(i, (i // 5) * 5 + (i + 1) % 5) for i in range(15)}
    with pytest.raises(UserError, match="divisible by 5"):
        asymmetric_targets([f"c{i}" for i in range(12)], "block")


# --------------------------------------------------------------------------- instance-dependent


@pytest.mark.parametrize("recipe", ["cores", "ptd"])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_inst_mean_rate(recipe, rate):
    C = 10
    y = balanced_labels(C, 500)
    x = np.random.default_rng(1).random((len(y), 48))
    z = instance_noise(y, x, C, rate, np.random.default_rng(4), recipe=recipe)
    assert abs(np.mean(z != y) - rate) < 0.03
    # uint8 input is scaled to [0, 1] and gives the same labels as the float version
    x8 = (x * 255).round().astype(np.uint8)
    z8 = instance_noise(y, x8, C, rate, np.random.default_rng(4), recipe=recipe)
    zf = instance_noise(y, x8 / 255.0, C, rate, np.random.default_rng(4), recipe=recipe)
    assert np.array_equal(z8, zf)


def test_inst_rate_zero_is_clean():
    y = balanced_labels(5, 100)
    x = np.random.default_rng(0).random((len(y), 12))
    for recipe in ("cores", "ptd"):
        assert np.array_equal(instance_noise(y, x, 5, 0.0, np.random.default_rng(0), recipe=recipe), y)


def test_inst_shared_projection_vs_per_class():
    """CORES shares one W, PTD draws one per true class: identical images show the difference.

    With every image equal to ones, scores are W's column sums (std ~ sqrt(L), so the
    softmax is nearly one-hot). Under CORES, all classes but one flip to the same
    argmax class; under PTD each true class has its own favourite target.
    """
    C, L = 10, 300
    y = balanced_labels(C, 300)
    x = np.ones((len(y), L))
    tops = {}
    for recipe in ("cores", "ptd"):
        z = instance_noise(y, x, C, 0.5, np.random.default_rng(11), recipe=recipe)
        m = transition_matrix(y, z, C).astype(float)
        np.fill_diagonal(m, -1)
        tops[recipe] = m.argmax(axis=1)
        assert abs(np.mean(z != y) - 0.5) < 0.04
    values, counts = np.unique(tops["cores"], return_counts=True)
    assert counts.max() >= C - 1
    assert len(np.unique(tops["ptd"])) >= 4


def test_raw_pixel_matrix_resizes_and_converts():
    rng = np.random.default_rng(0)
    rgb32 = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(raw_pixel_matrix(ArraySource(rgb32)), rgb32.reshape(3, -1))
    grey = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    m = raw_pixel_matrix(ArraySource(grey))
    assert m.shape == (2, 32 * 32 * 3)
    assert np.array_equal(m.reshape(2, 32, 32, 3)[..., 1], grey)  # grey replicated to RGB
    big = np.full((2, 64, 48, 3), 200, dtype=np.uint8)
    m = raw_pixel_matrix(ArraySource(big), size=8)
    assert m.shape == (2, 8 * 8 * 3) and np.all(m == 200)


# --------------------------------------------------------------------------- apply_noise and seeding


def make_set(classes, n=600, seed=0, hw=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8)
    labels = rng.integers(0, len(classes), n)
    return LabeledSet(ArraySource(images), labels, list(classes))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_apply_noise_seeding_and_info(kind):
    classes = list(FINE_CLASSES) if kind in ("asym", "asym-block") else list(CIFAR10_CLASSES)
    data = make_set(classes, n=1500)
    spec = NoiseSpec(kind, 0.5)
    a, info = apply_noise(spec, data, seed=123, image_size=8)
    b, _ = apply_noise(spec, data, seed=123, image_size=8)
    c, _ = apply_noise(spec, data, seed=124, image_size=8)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert np.array_equal(a.true_labels, data.labels)
    assert a.source is data.source and a.classes == data.classes
    assert info["kind"] == kind and info["rate"] == 0.5 and info["seed"] == 123
    assert info["realised_rate"] == pytest.approx(np.mean(a.labels != data.labels))
    assert 0.2 < info["realised_rate"] < 0.65
    tm = np.array(info["transition_matrix"])
    assert tm.shape == (len(classes), len(classes)) and tm.sum() == len(data)
    assert np.array_equal(tm.sum(axis=1), np.bincount(data.labels, minlength=len(classes)))
    assert isinstance(info["convention"], str) and info["convention"]
    json.dumps(info)  # saved with the run


def test_apply_noise_asym_info_and_default_image_size():
    data = make_set(CIFAR10_CLASSES, n=2000)
    noisy, info = apply_noise(parse_noise("asym:0.4"), data, seed=0)
    assert info["variant"] == "cifar10"
    assert abs(info["realised_rate_mapped"] - 0.4) < 0.05
    _, info = apply_noise(parse_noise("inst:0.3"), make_set(CIFAR10_CLASSES, n=200), seed=0)
    assert info["image_size"] == 32 and info["recipe"] == "cores" and "32x32" in info["convention"]


def test_apply_noise_refuses_already_noisy_labels():
    data = make_set(CIFAR10_CLASSES, n=50)
    true = data.labels.copy()
    true[0] = (true[0] + 1) % 10
    noisy = data.with_labels(data.labels, true_labels=true)
    with pytest.raises(UserError, match="already noisy"):
        apply_noise(NoiseSpec("sym", 0.2), noisy, seed=0)
    clean = data.with_labels(data.labels, true_labels=data.labels.copy())
    apply_noise(NoiseSpec("sym", 0.2), clean, seed=0)  # known-clean is fine


# --------------------------------------------------------------------------- parsing and helpers


def test_parse_noise_valid():
    assert parse_noise("sym:0.6") == NoiseSpec("sym", 0.6)
    assert parse_noise(" ASYM : 0.4 ") == NoiseSpec("asym", 0.4)
    assert parse_noise("inst-ptd:0") == NoiseSpec("inst-ptd", 0.0)
    assert parse_noise("symflip:1") == NoiseSpec("symflip", 1.0)
    for kind in NOISE_KINDS:
        spec = parse_noise(f"{kind}:0.25")
        assert parse_noise(str(spec)) == spec


@pytest.mark.parametrize("text", ["sym", "foo:0.2", "sym:1.5", "sym:-0.1", "sym:abc", "sym:nan", "sym:0.2:1", ""])
def test_parse_noise_errors(text):
    with pytest.raises(UserError) as e:
        parse_noise(text)
    msg = str(e.value)
    assert repr(text) in msg
    assert "sym, symflip, asym, asym-block, inst, inst-ptd" in msg
    assert "[0, 1]" in msg
    assert "\n" not in msg


def test_parse_noise_suggests_near_kind():
    with pytest.raises(UserError, match="did you mean"):
        parse_noise("symflp:0.2")
    with pytest.raises(UserError):
        NoiseSpec("sym", 2.0)
    with pytest.raises(UserError):
        NoiseSpec("gaussian", 0.2)


def test_transition_matrix_counts():
    m = transition_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 0, 2, 2], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m.dtype == np.int64
