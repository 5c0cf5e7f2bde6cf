"""DivideMix, UNICON, MixMatch, small-loss and cleanlab: pieces on constructed inputs, methods end to end."""
import json
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from noisyft import api
from noisyft.config import OptimConfig
from noisyft.methods import METHODS
from noisyft.methods.dividemix import co_divide, divide, gmm_clean_prob
from noisyft.methods.mixmatch import (FeatureViews, MixSettings, average_head, guess_labels, linear_rampup, mix_lambda,
                                      mixmatch_step, mixup, refine_labels, semi_loss, sharpen, uniform_prior_penalty)
from noisyft.methods.unicon import (clean_weight, jsd_threshold, jsd_to_label, nt_xent, uniform_selection,
                                    unicon_split)

# ---------------------------------------------------------------------------
# DivideMix: the GMM split and co-divide
# ---------------------------------------------------------------------------


def test_gmm_split_finds_the_high_loss_mode_and_matches_sklearn():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.2, 0.05, 300).clip(0), rng.normal(2.0, 0.3, 100)])
    prob = gmm_clean_prob(losses)
    assert (prob[:300] > 0.5).mean() > 0.98 and (prob[300:] < 0.5).mean() > 0.98
    x = ((losses - losses.min()) / (losses.max() - losses.min()))[:, None]  # DivideMix's global min-max
    gmm = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=0).fit(x)
    ref = gmm.predict_proba(x)[:, gmm.means_.argmin()]
    assert ((prob > 0.5) == (ref > 0.5)).mean() > 0.995


def test_gmm_split_is_global_not_per_class():
    # one "class" of the per-class fitter = a single mixture over all losses, whatever the labels
    losses = np.array([0.1, 0.12, 0.11, 0.09, 3.0, 3.1, 0.1, 2.9])
    prob = gmm_clean_prob(losses)
    assert list(prob > 0.5) == [True, True, True, True, False, False, True, False]


def test_gmm_split_edge_cases():
    assert np.all(gmm_clean_prob(np.full(5, 0.7)) == 1.0)  # constant losses: no evidence against any label
    prob = gmm_clean_prob(np.array([0.1, 0.2, np.nan, 3.0, 0.15, np.inf]))
    assert prob[2] == 0.0 and prob[5] == 0.0  # unscoreable samples are not trusted


def test_co_divide_trains_each_head_on_the_other_heads_split():
    prob1 = np.array([0.9, 0.1, 0.8, 0.3, 0.55])
    prob2 = np.array([0.2, 0.9, 0.7, 0.6, 0.4])
    s1, s2 = co_divide(prob1, prob2, 0.5)
    assert list(s1.labelled) == [1, 2, 3] and list(s1.unlabelled) == [0, 4]  # from head 2's probabilities
    assert np.allclose(s1.w, [0.9, 0.7, 0.6])
    assert list(s2.labelled) == [0, 2, 4] and list(s2.unlabelled) == [1, 3]  # from head 1's
    assert np.allclose(s2.w, [0.9, 0.8, 0.55])
    assert list(divide(prob1, 0.6).labelled) == [0, 2]  # threshold is strict and configurable


# ---------------------------------------------------------------------------
# UNICON: JSD, threshold, uniform selection
# ---------------------------------------------------------------------------


def test_jsd_is_zero_for_agreement_and_one_for_total_disagreement():
    labels = torch.tensor([0, 1, 2])
    probs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    d = jsd_to_label(probs, labels)
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(1.0, abs=1e-6)  # base 2: in [0, 1]
    assert 0.0 < d[2] < 1.0


def test_jsd_threshold_is_mean_and_lowered_above_d_u():
    assert jsd_threshold(np.array([0.1, 0.3, 0.5])) == pytest.approx(0.3)
    high = np.array([0.5, 0.8, 0.9, 1.0])  # mean 0.8 > 0.7 → 0.8 − (0.8 − 0.5)/5
    assert jsd_threshold(high) == pytest.approx(0.74)
    assert jsd_threshold(high, d_u=0.9) == pytest.approx(0.8)


def test_uniform_selection_keeps_lowest_jsd_per_class_equally():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    jsd = np.array([0.9, 0.1, 0.5, 0.2, 0.3, 0.3, 0.05, 0.8, 0.4, 0.6])
    # SR 0.6 of N=10 over C=3 → int(2.0) = 2 per class; class 1 tie at 0.3 broken by index (4 before 5)
    assert list(uniform_selection(jsd, labels, 3, 0.6)) == [1, 3, 4, 6, 8, 9]
    assert list(uniform_selection(jsd, labels, 3, 1.0)) == [1, 2, 3, 4, 5, 6, 8, 9]  # 3 per class; class 2 has 2


def test_unicon_split_derives_sr_from_the_threshold():
    labels = np.array([0] * 5 + [1] * 5)
    jsd = np.array([0.1, 0.2, 0.9, 0.95, 0.3, 0.05, 0.1, 0.15, 0.85, 0.9])
    split, sr, thr = unicon_split(jsd, labels, 2)
    assert thr == pytest.approx(jsd.mean()) and sr == pytest.approx(0.6)  # 6 of 10 below the mean
    assert list(split.labelled) == [0, 1, 4, 5, 6, 7]  # int(0.6·10/2) = 3 lowest per class
    assert sorted(split.unlabelled) == [2, 3, 8, 9]
    fixed, sr_fixed, _ = unicon_split(jsd, labels, 2, sr=0.2)
    assert sr_fixed == 0.2 and list(fixed.labelled) == [0, 5]
    assert np.allclose(clean_weight(np.array([0.1, 0.49, 0.5, 0.8])), [1.0, 1.0, 0.5, 0.2])


def test_contrastive_loss_rewards_matching_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z)) < nt_xent(z, torch.randn(8, 16))


# ---------------------------------------------------------------------------
# MixMatch pieces
# ---------------------------------------------------------------------------


def test_sharpen_and_label_guessing():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    s = sharpen(p, 0.5)
    assert torch.allclose(s.sum(1), torch.ones(2)) and torch.allclose(sharpen(p, 1.0), p)
    assert (s.max(1).values > p.max(1).values).all()
    expected = p ** 2 / (p ** 2).sum(1, keepdim=True)
    assert torch.allclose(s, expected)
    q = torch.tensor([[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]])
    assert torch.allclose(guess_labels([p, q], 0.5), sharpen((p + q) / 2, 0.5))


def test_label_refinement_mixes_given_label_and_prediction():
    onehot = torch.tensor([[1.0, 0.0, 0.0]])
    p = torch.tensor([[0.2, 0.5, 0.3]])
    assert torch.allclose(refine_labels([p], onehot, torch.ones(1, 1)), onehot)  # fully trusted: the label
    assert torch.allclose(refine_labels([p], onehot, torch.zeros(1, 1)), sharpen(p))  # untrusted: the prediction
    half = refine_labels([p, p], onehot, torch.full((1, 1), 0.5), T=1.0)
    assert torch.allclose(half, 0.5 * onehot + 0.5 * p)


def test_mixup_is_a_convex_combination_with_lambda_at_least_half():
    rng = np.random.default_rng(0)
    lams = [mix_lambda(rng, 4.0) for _ in range(200)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    x = torch.randn(6, 4)
    y = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    mx, my = mixup(x, y, 0.7, perm)
    assert torch.allclose(mx, 0.7 * x + 0.3 * x[perm]) and torch.allclose(my, 0.7 * y + 0.3 * y[perm])
    assert torch.allclose(my.sum(1), torch.ones(6)) and (my >= 0).all()
    assert torch.equal(mixup(x, y, 1.0, perm)[0], x)


def test_semi_loss_penalty_and_rampup():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    onehot = torch.eye(2)
    lx, lu = semi_loss(logits, onehot, logits, logits.softmax(1))
    assert lx == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item())
    assert lu == pytest.approx(0.0, abs=1e-9)
    assert semi_loss(logits, onehot, logits[:0], onehot[:0])[1] == 0.0  # no unlabelled samples
    assert uniform_prior_penalty(logits) == pytest.approx(0.0, abs=1e-6)  # mean prediction is uniform
    assert uniform_prior_penalty(torch.tensor([[3.0, 0.0], [3.0, 0.0]])) > 0.1
    assert [linear_rampup(c, 5, 16) for c in (4, 5, 13, 21, 30)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_mixmatch_step_shapes_and_gradients_reach_only_the_trained_head():
    torch.manual_seed(0)
    feats = torch.randn(40, 8)
    views = FeatureViews(feats)
    head, peer = nn.Linear(8, 3), nn.Linear(8, 3)
    g = torch.Generator().manual_seed(0)
    idx_x, idx_u = torch.arange(0, 6), torch.arange(20, 30)
    xs = [views.augment(feats[idx_x], k, g) for k in ("weak", "weak", "strong", "strong")]
    us = [views.augment(feats[idx_u], k, g) for k in ("weak", "weak", "strong", "strong")]
    onehot = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    extra = lambda h, a, b: 0.025 * nt_xent(h(a), h(b))  # noqa: E731
    for s in (MixSettings(lambda_u=25), MixSettings(lambda_u=30, strong_mix=True, extra_loss=extra)):
        perm = torch.randperm(2 * 6 + 2 * 10, generator=g)
        loss, parts = mixmatch_step(head, peer, views, xs, onehot, torch.full((6, 1), 0.8), us, s, 0.7, perm, 0.5)
        assert loss.ndim == 0 and torch.isfinite(loss) and {"lx", "lu", "penalty"} <= set(parts)
        head.zero_grad(), peer.zero_grad()
        loss.backward()
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
        assert peer.weight.grad is None
    assert "contrastive" in parts
    empty = [x[:0] for x in us]  # every sample labelled: no unlabelled batch
    loss, parts = mixmatch_step(head, peer, views, xs, onehot, torch.ones(6, 1), empty, MixSettings(), 0.6,
                                torch.randperm(12, generator=g), 1.0)
    assert torch.isfinite(loss) and parts["lu"] == 0.0


def test_feature_views_augment_but_keep_the_mean():
    feats = torch.randn(2000, 16) + 3.0
    views = FeatureViews(feats, weak=(0.0, 0.0), strong=(0.2, 0.3))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(views.augment(feats, "weak", g), feats)
    strong = views.augment(feats, "strong", g)
    assert strong.shape == feats.shape and not torch.equal(strong, feats)
    assert torch.allclose(strong.mean(0), feats.mean(0), atol=0.15)  # inverted dropout + zero-mean noise


def test_feature_views_drawn_at_once_have_each_kinds_strength():
    """The accelerator path (one draw for every view of a batch): each view keeps its kind's noise and dropout."""
    feats = torch.randn(4000, 16) + 3.0
    views = FeatureViews(feats, weak=(0.5, 0.0), strong=(0.0, 0.3))
    weak1, strong, weak2 = views.augment_views(feats, ("weak", "strong", "weak"), torch.Generator().manual_seed(1),
                                               one_draw=True)
    assert not torch.equal(weak1, weak2)  # independent draws per view
    z = (weak1 - feats) / views.std
    assert abs(float(z.std()) - 0.5) < 0.02 and (weak1 != 0).all()  # noise only
    dropped = float((strong == 0).float().mean())
    assert abs(dropped - 0.3) < 0.02  # dropout only, no noise: survivors are scaled copies
    assert torch.allclose(strong[strong != 0], (feats / 0.7)[strong != 0])
    # the CPU default is one draw per view, exactly augment's (CPU runs keep their numbers)
    a = views.augment_views(feats[:50], ("weak", "strong"), torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    assert all(torch.equal(v, views.augment(feats[:50], k, g)) for v, k in zip(a, ("weak", "strong")))


def test_average_head_predicts_like_the_summed_logit_ensemble():
    torch.manual_seed(0)
    a, b, z = nn.Linear(5, 4), nn.Linear(5, 4), torch.randn(50, 5)
    assert torch.equal(average_head(a, b)(z).argmax(1), (a(z) + b(z)).argmax(1))


# ---------------------------------------------------------------------------
# cleanlab peer on constructed features
# ---------------------------------------------------------------------------


def test_cleanlab_peer_finds_flipped_labels_in_separable_features():
    from noisyft.methods.cleanlab_peer import find_issues

    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(3), 100)
    feats = (rng.normal(0, 1, (300, 8)) + 4 * np.eye(3, 8)[true]).astype(np.float32)
    given = true.copy()
    flipped = rng.choice(300, 45, replace=False)
    given[flipped] = (true[flipped] + 1) % 3
    ctx = SimpleNamespace(
        train=SimpleNamespace(labels=given), num_classes=3, device=torch.device("cpu"), features=lambda split: feats,
        cfg=SimpleNamespace(seed=0, epochs_lp=15, batch_size=64),
        lp_optim=OptimConfig("adamw", 1e-2, 1e-5), run=SimpleNamespace(phase=lambda name: nullcontext()))
    kept, quality, _ = find_issues(ctx, torch.from_numpy(feats), folds=3)
    issues = np.setdiff1d(np.arange(300), kept)
    wrong = given != true
    assert wrong[issues].mean() > 0.8 and wrong[issues].sum() > 0.8 * wrong.sum()
    assert quality[wrong].mean() < quality[~wrong].mean()


# ---------------------------------------------------------------------------
# Every new method end to end on generated images
# ---------------------------------------------------------------------------

TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=16, num_workers=0, progress=False,
            lp_optim="adamw:1e-2:1e-5", noise="symflip:0.3", seed=3)
NEW_METHODS = {  # method: (epochs_lp, extra, expected selection epochs); -fft methods run epochs_fft=2 (cleanlab-fft 1)
    "small-loss-lp": (4, {"warmup": 2}, [3, 4]),
    "small-loss-fft": (4, {"warmup_fft": 1}, [2]),
    "dividemix-lp": (4, {"warmup": 2}, [3, 3, 4, 4]),
    "unicon-lp": (4, {"warmup": 2}, [3, 3, 4, 4]),
    "dividemix-lp-img": (2, {"warmup": 1}, [2, 2]),
    "unicon-lp-img": (2, {"warmup": 1}, [2, 2]),
    "cleanlab": (4, {"folds": 3}, [1]),
    "cleanlab-fft": (4, {"folds": 3}, [1]),
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("baselines") / "imgs", 16, 4)


@pytest.mark.parametrize("method", list(NEW_METHODS))
def test_method_runs_end_to_end(tiny_data, tmp_path, method):
    assert method in METHODS.names()
    epochs_lp, extra, sel_epochs = NEW_METHODS[method]
    fft = method.endswith("-fft")
    epochs_fft = {"small-loss-fft": 2, "cleanlab-fft": 1}.get(method)
    res = api.fit(data=str(tiny_data), method=method, out=str(tmp_path / "run"), epochs_lp=epochs_lp, extra=extra,
                  epochs_fft=epochs_fft, **TINY)
    d = res.run_dir
    issues = pd.read_csv(d / "label_issues.csv")
    assert len(issues) == 48 and issues["label_quality"].between(0, 1).all()
    assert issues["label_quality"].is_monotonic_increasing
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    n_epochs = epochs_fft if fft else epochs_lp
    assert [m["epoch"] for m in metrics if m["phase"] == ("fft" if fft else "lp")][-n_epochs:] == list(range(1, n_epochs + 1))
    assert all(0 <= m["test_acc"] <= 1 for m in metrics)
    selection = [json.loads(line) for line in (d / "selection.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in selection] == sel_epochs
    assert all({"precision", "recall", "f1"} <= set(s) and 0 < s["selected"] <= 48 for s in selection)
    if method.startswith(("dividemix", "unicon")):
        assert [s["head"] for s in selection] == [1, 2] * (len(sel_epochs) // 2)
    if method.startswith("cleanlab"):  # the peer reports issues and trains on the rest
        assert selection[0]["n_issues"] > 0 and selection[0]["selected"] + selection[0]["n_issues"] == 48
        assert issues["is_label_issue"].sum() == selection[0]["n_issues"]  # cleanlab's own verdict, not a threshold
    s = res.summary
    assert {"test_acc", "timings", "detection"} <= set(s) and "auroc" in s["detection"]
    delivered = [m for m in metrics if m["phase"] == ("fft" if fft else "lp")]
    assert s["delivered_phase"] == delivered[-1]["phase"] and s["test_acc"] == delivered[-1]["test_acc"]

