"""Tests for noisyft.selection: batched per-class GMM, clean selection, subsampling."""
from __future__ import annotations

import numpy as np
import pytest

from noisyft import selection as sel
from noisyft.errors import UserError
from noisyft.selection import (
    balanced_subsample,
    fit_per_class_gmm,
    select_clean,
    selection_metrics,
    sklearn_per_class_gmm,
    small_loss_selection,
)


def noisy_losses(seed: int, num_classes: int, n_per: int, max_noise: float = 0.5, clean_sigma: float = 0.8):
    """Realistic per-class losses: clean ~ lognormal around 0.1, mislabelled ~ around 2.

    Class sizes vary by a factor of 3 and every class has its own noise rate in
    ``[0, max_noise]``; samples are shuffled so classes are interleaved.
    Returns ``(losses, labels, is_noisy)``.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(n_per // 2, n_per * 3 // 2, num_classes)
    labels = np.repeat(np.arange(num_classes), sizes)
    noisy = rng.random(labels.size) < rng.uniform(0.0, max_noise, num_classes)[labels]
    clean_loss = rng.lognormal(np.log(0.1), clean_sigma, labels.size)
    noisy_loss = rng.lognormal(np.log(2.0), 0.6, labels.size)
    losses = np.where(noisy, noisy_loss, clean_loss)
    perm = rng.permutation(labels.size)
    return losses[perm], labels[perm], noisy[perm]


def decision_agreement(p: np.ndarray, q: np.ndarray, tau: float = 0.6) -> float:
    return float(np.mean((p > tau) == (q > tau)))


# ---------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    "seed,num_classes,n_per,max_noise,clean_sigma",
    [(0, 25, 600, 0.5, 0.8), (1, 20, 1000, 0.2, 1.0), (2, 30, 300, 0.8, 0.5)],
)
def test_agrees_with_sklearn_on_bimodal_losses(seed, num_classes, n_per, max_noise, clean_sigma):
    losses, labels, _ = noisy_losses(seed, num_classes, n_per, max_noise, clean_sigma)
    ours = fit_per_class_gmm(losses, labels, num_classes)
    ref = sklearn_per_class_gmm(losses, labels, num_classes)
    assert ours.status == ["fit"] * num_classes
    assert decision_agreement(ours.clean_prob, ref) >= 0.99
    # and not just on the decision: the posteriors themselves are close on most samples
    assert np.median(np.abs(ours.clean_prob - ref)) < 1e-3


@pytest.mark.parametrize("normalize", ["global", "none"])
def test_agrees_with_sklearn_for_other_normalisations(normalize):
    losses, labels, _ = noisy_losses(3, 15, 500)
    ours = fit_per_class_gmm(losses, labels, 15, normalize=normalize)
    ref = sklearn_per_class_gmm(losses, labels, 15, normalize=normalize)
    assert decision_agreement(ours.clean_prob, ref) >= 0.99


def test_selection_finds_the_mislabelled_samples():
    losses, labels, noisy = noisy_losses(4, 10, 800)
    clean = select_clean(fit_per_class_gmm(losses, labels, 10).clean_prob)
    assert np.mean(clean == ~noisy) > 0.95


def test_tiny_classes_padded_together_agree_with_sklearn():
    # classes of 2..5 samples land in shared padded buckets
    losses = np.array([0.1, 3.0, 0.2, 0.25, 4.0, 0.1, 0.15, 0.12, 5.0, 0.3, 0.31, 0.29, 0.33, 2.5])
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3])
    ours = fit_per_class_gmm(losses, labels, 4)
    ref = sklearn_per_class_gmm(losses, labels, 4)
    assert ours.status == ["fit"] * 4
    np.testing.assert_array_equal(ours.clean_prob > 0.6, ref > 0.6)
    np.testing.assert_allclose(ours.clean_prob[:2], [1.0, 0.0], atol=1e-9)  # two points, two components


def test_batched_fit_equals_fitting_each_class_alone():
    # very different class sizes -> several buckets with padding; nothing may leak between classes
    rng = np.random.default_rng(5)
    sizes = [7, 40, 300, 2500]
    labels = np.repeat(np.arange(4), sizes)
    losses = np.where(rng.random(labels.size) < 0.3, rng.lognormal(0.7, 0.5, labels.size), rng.lognormal(-2, 0.8, labels.size))
    perm = rng.permutation(labels.size)
    losses, labels = losses[perm], labels[perm]
    fit = fit_per_class_gmm(losses, labels, 4)
    for c in range(4):
        alone = fit_per_class_gmm(losses[labels == c], np.zeros(sizes[c], dtype=int), 1)
        np.testing.assert_allclose(fit.clean_prob[labels == c], alone.clean_prob, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fit.means[c], alone.means[0], rtol=1e-12)
        assert fit.n_iter[c] == alone.n_iter[0]


def test_result_is_permutation_equivariant():
    losses, labels, _ = noisy_losses(6, 8, 400)
    perm = np.random.default_rng(0).permutation(losses.size)
    a = fit_per_class_gmm(losses, labels, 8).clean_prob
    b = fit_per_class_gmm(losses[perm], labels[perm], 8).clean_prob
    np.testing.assert_allclose(a[perm], b, atol=1e-9)


def test_parameters_in_original_units_clean_first():
    rng = np.random.default_rng(7)
    n_clean, n_noisy = 700, 300
    losses = np.concatenate([rng.normal(1.0, 0.05, n_clean), rng.normal(5.0, 0.1, n_noisy)])
    labels = np.zeros(losses.size, dtype=int)
    for normalize in ("class", "global", "none"):
        fit = fit_per_class_gmm(losses, labels, 1, normalize=normalize)
        np.testing.assert_allclose(fit.means[0], [1.0, 5.0], atol=0.02)
        np.testing.assert_allclose(fit.weights[0], [0.7, 0.3], atol=0.01)
        assert fit.variances[0, 0] == pytest.approx(0.05**2, rel=0.3, abs=0.03 if normalize != "none" else 1e-3)
        assert fit.converged[0] and 2 <= fit.n_iter[0] <= 10
        np.testing.assert_array_equal(select_clean(fit.clean_prob), np.arange(losses.size) < n_clean)


def test_low_mean_component_is_clean_whatever_the_component_order(monkeypatch):
    losses, labels, _ = noisy_losses(8, 6, 500)
    normal = fit_per_class_gmm(losses, labels, 6)
    real_split = sel._kmeans_split
    # start every class with the high-loss cluster as component 0
    monkeypatch.setattr(sel, "_kmeans_split", lambda F, n: real_split(F, n)[:, ::-1].copy())
    flipped = fit_per_class_gmm(losses, labels, 6)
    np.testing.assert_allclose(flipped.clean_prob, normal.clean_prob, atol=1e-9)
    np.testing.assert_allclose(flipped.means, normal.means, rtol=1e-9)
    assert np.all(flipped.means[:, 0] < flipped.means[:, 1])


def test_max_iter_bounds_iterations():
    losses, labels, _ = noisy_losses(9, 5, 400)
    fit = fit_per_class_gmm(losses, labels, 5, max_iter=1)
    np.testing.assert_array_equal(fit.n_iter, 1)
    assert not fit.converged.any()  # the first change is always infinite
    assert decision_agreement(fit.clean_prob, sklearn_per_class_gmm(losses, labels, 5, max_iter=1)) >= 0.99


# ---------------------------------------------------------------- edge cases


def test_empty_class():
    losses = np.array([0.1, 0.2, 3.0, 0.15])
    labels = np.array([0, 0, 0, 0])
    fit = fit_per_class_gmm(losses, labels, 3)
    assert fit.status == ["fit", "empty", "empty"]
    assert np.isnan(fit.means[1:]).all() and (fit.n_iter[1:] == 0).all()
    assert fit.clean_prob.shape == (4,)


def test_single_sample_class_is_trusted():
    losses = np.array([0.1, 0.2, 3.0, 0.15, 9.0])
    labels = np.array([0, 0, 0, 0, 1])
    fit = fit_per_class_gmm(losses, labels, 2)
    assert fit.status == ["fit", "too_few"]
    assert fit.clean_prob[4] == 1.0
    assert np.isnan(fit.means[1]).all()


def test_class_with_one_finite_loss_is_too_few():
    losses = np.array([0.3, np.nan, np.inf, 0.1, 0.2, 4.0])
    labels = np.array([1, 1, 1, 0, 0, 0])
    fit = fit_per_class_gmm(losses, labels, 2)
    assert fit.status == ["fit", "too_few"]
    np.testing.assert_array_equal(fit.clean_prob[:3], [1.0, 0.0, 0.0])


def test_all_nonfinite_class():
    fit = fit_per_class_gmm(np.array([np.nan, -np.inf]), np.array([0, 0]), 1)
    assert fit.status == ["too_few"]
    np.testing.assert_array_equal(fit.clean_prob, [0.0, 0.0])
    assert fit.n_nonfinite == 2


def test_constant_losses():
    losses = np.array([0.5, 0.5, 0.5, np.nan, 0.1, 0.2, 3.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    fit = fit_per_class_gmm(losses, labels, 2)
    assert fit.status == ["constant", "fit"]
    np.testing.assert_array_equal(fit.clean_prob[:4], [1.0, 1.0, 1.0, 0.0])
    assert np.isnan(fit.means[0]).all()


def test_nonfinite_losses_are_untrusted_and_do_not_affect_the_fit():
    losses, labels, _ = noisy_losses(10, 4, 300)
    bad = np.array([3, 50, 51, 400])
    dirty = losses.copy()
    dirty[bad] = [np.nan, np.inf, -np.inf, np.nan]
    fit = fit_per_class_gmm(dirty, labels, 4)
    assert fit.n_nonfinite == 4
    np.testing.assert_array_equal(fit.clean_prob[bad], 0.0)
    keep = np.setdiff1d(np.arange(losses.size), bad)
    clean_fit = fit_per_class_gmm(losses[keep], labels[keep], 4)
    np.testing.assert_allclose(fit.clean_prob[keep], clean_fit.clean_prob, atol=1e-12)
    ref = sklearn_per_class_gmm(dirty, labels, 4)
    np.testing.assert_array_equal(ref[bad], 0.0)


def test_two_distinct_values():
    fit = fit_per_class_gmm(np.array([0.2, 0.2, 0.9]), np.array([0, 0, 0]), 1)
    assert fit.status == ["fit"]
    np.testing.assert_allclose(fit.clean_prob, [1.0, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(fit.means[0], [0.2, 0.9], atol=1e-9)


def test_no_samples_at_all():
    fit = fit_per_class_gmm(np.array([]), np.array([], dtype=int), 2)
    assert fit.status == ["empty", "empty"] and fit.clean_prob.shape == (0,)


def test_bad_inputs():
    with pytest.raises(UserError, match=r"labels\[1\] = 5 is outside \[0, 3\)"):
        fit_per_class_gmm([0.1, 0.2], [0, 5], 3)
    with pytest.raises(UserError, match="outside"):
        fit_per_class_gmm([0.1, 0.2], [0, -1], 3)
    with pytest.raises(ValueError, match="equal length"):
        fit_per_class_gmm([0.1, 0.2], [0], 3)
    with pytest.raises(UserError, match="normalize"):
        fit_per_class_gmm([0.1, 0.2], [0, 0], 1, normalize="minmax")
    with pytest.raises(UserError, match="reg_covar"):
        fit_per_class_gmm([0.1, 0.2], [0, 0], 1, reg_covar=0.0)
    with pytest.raises(UserError, match="max_iter"):
        fit_per_class_gmm([0.1, 0.2], [0, 0], 1, max_iter=0)
    with pytest.raises(UserError, match="num_classes"):
        fit_per_class_gmm([0.1, 0.2], [0, 0], 0)
    with pytest.raises(UserError, match="tau"):
        select_clean(np.array([0.5]), tau=1.5)
    with pytest.raises(UserError, match="keep_fraction"):
        small_loss_selection([0.1], [0], 1, keep_fraction=-0.1)


# ---------------------------------------------------------------- selection


def test_select_clean_is_strict():
    p = np.array([0.0, 0.6, 0.6000001, 1.0, np.nan])
    np.testing.assert_array_equal(select_clean(p), [False, False, True, True, False])
    np.testing.assert_array_equal(select_clean(p, tau=0.0), [False, True, True, True, False])


def _mask_and_labels():
    labels = np.array([0] * 10 + [1] * 6 + [2] * 8)
    clean = np.zeros(labels.size, dtype=bool)
    clean[[0, 1, 2, 3, 4, 5, 6]] = True  # class 0: 7 clean
    clean[[10, 12, 13]] = True  # class 1: 3 clean
    clean[[16, 17, 18, 19, 20]] = True  # class 2: 5 clean
    return clean, labels


def test_balanced_subsample_draws_n_min_clean_per_class():
    clean, labels = _mask_and_labels()
    idx, n_min, no_clean = balanced_subsample(clean, labels, 4, np.random.default_rng(0))
    assert n_min == 3 and no_clean == []  # class 3 is empty: ignored, not listed
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert clean[idx].all()
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [3, 3, 3, 0])
    np.testing.assert_array_equal(idx[labels[idx] == 1], [10, 12, 13])


def test_balanced_subsample_is_seeded():
    clean, labels = _mask_and_labels()
    a = balanced_subsample(clean, labels, 3, np.random.default_rng(42))[0]
    b = balanced_subsample(clean, labels, 3, np.random.default_rng(42))[0]
    np.testing.assert_array_equal(a, b)
    draws = {tuple(balanced_subsample(clean, labels, 3, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(draws) > 1


def test_balanced_subsample_is_uniform_within_class():
    labels = np.array([0] * 10 + [1] * 2)
    clean = np.ones(12, dtype=bool)
    rng = np.random.default_rng(1)
    hits = np.zeros(12)
    for _ in range(2000):
        idx, n_min, _ = balanced_subsample(clean, labels, 2, rng)
        hits[idx] += 1
    assert n_min == 2
    # each class-0 sample is drawn with probability 2/10: 400 of 2000, sd ~ 18
    assert np.all(np.abs(hits[:10] - 400) < 80)
    np.testing.assert_array_equal(hits[10:], 2000)


def test_balanced_subsample_class_without_clean_samples():
    clean, labels = _mask_and_labels()
    clean[labels == 1] = False
    idx, n_min, no_clean = balanced_subsample(clean, labels, 3, np.random.default_rng(0))
    assert no_clean == [1] and n_min == 5
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), [5, 0, 5])


def test_balanced_subsample_nothing_clean():
    labels = np.array([0, 0, 2])
    idx, n_min, no_clean = balanced_subsample(np.zeros(3, dtype=bool), labels, 3, np.random.default_rng(0))
    assert idx.size == 0 and n_min == 0 and no_clean == [0, 2]


def test_selection_metrics_hand_example():
    given = np.array([0, 1, 2, 3, 4, 5])
    true = np.array([0, 1, 2, 0, 0, 0])  # samples 0, 1, 2 are clean
    m = selection_metrics(np.array([0, 1, 3]), given, true)
    assert m["count"] == 3 and m["n_clean"] == 3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    mask = np.array([True, True, False, True, False, False])
    assert selection_metrics(mask, given, true) == m
    m = selection_metrics(np.array([0, 1, 2, 3, 4]), given, true)
    assert (m["precision"], m["recall"]) == (pytest.approx(0.6), 1.0)
    assert m["f1"] == pytest.approx(0.75)


def test_selection_metrics_zero_division():
    given, true = np.array([1, 1]), np.array([0, 0])  # nothing clean
    assert selection_metrics(np.array([], dtype=int), given, true) == {
        "count": 0, "n_clean": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0
    }
    assert selection_metrics(np.array([0]), given, true)["f1"] == 0.0


def test_small_loss_selection_keeps_fraction_per_class():
    rng = np.random.default_rng(11)
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    losses = rng.random(labels.size) + labels  # class 1 losses all above class 0's
    losses[12] = np.nan
    keep = small_loss_selection(losses, labels, 4, keep_fraction=0.5)
    # round half up: 5 of 10, 4 of 7 (3.5), 2 of 3 (1.5); class 3 empty
    np.testing.assert_array_equal(np.bincount(labels[keep], minlength=4), [5, 4, 2, 0])
    assert not keep[12]
    for c in range(3):
        m = labels == c
        kept, dropped = losses[m & keep], losses[m & ~keep]
        assert kept.max() < np.nanmin(dropped)
    assert not small_loss_selection(losses, labels, 3, 0.0).any()
    np.testing.assert_array_equal(small_loss_selection(losses, labels, 3, 1.0), np.isfinite(losses))
