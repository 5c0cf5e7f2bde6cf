"""The consensus detector and method: pieces on constructed inputs, end to end on generated images, resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from noisyft import api
from noisyft.config import OptimConfig
from noisyft.errors import UserError
from noisyft.methods import consensus_detect as cd
from noisyft.methods.consensus import ConsensusSettings, RefurbishedTargets, prediction_components, refurbished_targets
from noisyft.run.noise_rate import confident_joint_rates

TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, epochs_lp=15, epochs_fft=2,
            batch_size=32, num_workers=0, progress=False, lp_optim="adamw:1e-2:1e-5")


def _blobs(n_per_class=60, classes=3, flip=0.3, seed=0):
    """Well-separated Gaussian clusters with a share of labels flipped: (features, given, true)."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(0, 1, (classes, 16)) * 4
    feats = centres[true] + rng.normal(0, 1, (len(true), 16))
    given = true.copy()
    flip_idx = rng.choice(len(true), int(flip * len(true)), replace=False)
    given[flip_idx] = (true[flip_idx] + rng.integers(1, classes, len(flip_idx))) % classes
    return torch.tensor(feats, dtype=torch.float32), given, true


def test_knn_and_oof_scores_find_flipped_labels():
    from sklearn.metrics import roc_auc_score

    feats, given, true = _blobs()
    wrong = given != true
    knn = cd.given_prob(cd.knn_probs(feats, given, 3, k=10), given)
    oof = cd.given_prob(cd.oof_probs(feats, given, 3, folds=4, epochs=10, optim=OptimConfig("adamw", 1e-2, 0), batch_size=32), given)
    assert roc_auc_score(wrong, -knn) > 0.9 and roc_auc_score(wrong, -oof) > 0.9
    both = cd.ensemble_score([knn, oof], "rank")
    assert roc_auc_score(wrong, -both) > 0.9


@pytest.mark.parametrize("loss", ["ce", "gce", "sce", "elr"])
@pytest.mark.parametrize("optim", [OptimConfig("adamw", 1e-2, 1e-4), OptimConfig("sgd", 0.1, 1e-4, 0.9)])
def test_probes_stepped_together_equal_probes_trained_alone(loss, optim):
    """fit_probes (the out-of-fold probes as one stacked head; ELR keeps per-sample state, so alone) gives each
    fold the head fit_probe trains on it alone, a ragged last batch included (folds of 135/135/134 at batch 32)."""
    from noisyft.methods.linear_probe import fit_probe, fit_probes

    feats, given, _ = _blobs()
    y = torch.as_tensor(given)
    folds = [np.arange(len(given))[np.arange(len(given)) % 4 != k] for k in range(4)]
    folds[3] = folds[3][:-1]  # sizes 135, 135, 135, 134: a ragged last batch
    kw = dict(epochs=3, optim=optim, batch_size=32, seed=5, salt_base=60, loss=loss)  # (SGD at lr 0.1 on SCE
    # amplifies float rounding about 6x an epoch: 5e-7 after one, 1e-3 after six; the heads agree, the floats drift)
    together = fit_probes(feats, y, folds, 3, **kw)
    for k, f in enumerate(folds):
        alone = fit_probe(feats, y, f, 3, salt=k, **kw)
        torch.testing.assert_close(together[k].weight, alone.weight, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together[k].bias, alone.bias, rtol=1e-4, atol=1e-4)


def test_probes_with_different_step_counts_are_trained_alone():
    """A fold with one batch more than another cannot share the others' steps: each head as fit_probe's, exactly."""
    from noisyft.methods.linear_probe import fit_probe, fit_probes

    feats, given, _ = _blobs()
    y = torch.as_tensor(given)
    folds = [np.arange(64), np.arange(65)]  # two and three batches of 32
    kw = dict(epochs=2, optim=OptimConfig("adamw", 1e-2, 0), batch_size=32, seed=1, salt_base=60, loss="gce")
    for k, head in enumerate(fit_probes(feats, y, folds, 3, **kw)):
        assert torch.equal(head.weight, fit_probe(feats, y, folds[k], 3, salt=k, **kw).weight)


def test_knn_never_counts_a_sample_as_its_own_neighbour():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    labels = np.array([0, 1, 1, 1])
    p = cd.knn_probs(feats, labels, 2, k=1, chunk=3)  # chunking crosses the diagonal
    assert p[0].tolist() == [0.0, 1.0]  # its only neighbour (sample 1) says class 1
    assert p[1].tolist() == [1.0, 0.0]


def test_rank_ensemble_is_scale_free_and_refurbished_targets_mix():
    a, b = np.array([0.1, 0.2, 0.9]), np.array([10.0, 30.0, 20.0])
    assert np.allclose(cd.ensemble_score([a, b], "rank"), [0.0, 0.75, 0.75])
    t = refurbished_targets(np.array([0, 1]), np.array([1.0, 0.0]), np.array([[0.2, 0.8], [0.9, 0.1]]), 2, T=1.0)
    assert torch.allclose(t, torch.tensor([[1.0, 0.0], [0.9, 0.1]]))


def test_start_head_targets_follow_the_rule():
    """head_targets=soft: the refurbished labels; posterior: the sharpened label posterior, which keeps a doubted
    label where the noise process says labels are rarely wrong (fine-tuning's own targets)."""
    from noisyft.methods.consensus import start_targets
    from noisyft.methods.mixmatch import sharpen

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), labels] = 0.9  # a detector that agrees with almost every label ...
    probs[0] = [0.3, 0.3, 0.4] if labels[0] != 2 else [0.4, 0.3, 0.3]  # ... and mildly doubts sample 0's
    w = np.full(300, 0.9)
    w[0] = 0.1  # the GMM distrusts sample 0
    soft = start_targets(labels, w, probs, ConsensusSettings(head_targets="soft"))
    assert torch.allclose(soft, refurbished_targets(labels, w, probs, 3, T=0.5))
    post = start_targets(labels, w, probs, ConsensusSettings(head_targets="posterior"))
    calibrated, T = cd.noise_model(probs, labels)
    assert torch.allclose(post, sharpen(torch.as_tensor(cd.label_posterior(calibrated, labels, T)), 0.5))
    assert post[0].argmax() == labels[0] and soft[0].argmax() != labels[0]  # low noise: the label outweighs the doubt


def test_settings_are_typed_and_checked_through_fit_validation():
    from noisyft.config import FitConfig
    from noisyft.methods.settings import resolve_settings, validate_config

    cfg = validate_config(FitConfig(method="consensus", extra={"components": "oof,knn", "knn_k": 7, "select_best": False}))
    s = resolve_settings(cfg, ["a", "b"])
    assert s.component_list == ["oof", "knn"] and s.knn_k == 7 and s.select_best is False
    with pytest.raises(UserError, match="combine=max: choose from mean, rank"):
        validate_config(FitConfig(method="consensus", extra={"combine": "max"}))
    with pytest.raises(UserError, match="components=oof,bogus"):
        validate_config(FitConfig(method="consensus", extra={"components": "oof,bogus"}))
    with pytest.raises(UserError, match="did you mean knn_k"):
        validate_config(FitConfig(method="consensus", extra={"knn_kk": 3}))


def test_temporal_ensemble_is_collected_from_the_training_pass():
    labels = np.array([0, 1, 1])
    t = RefurbishedTargets(labels, np.array([0.9, 0.1, 0.8]), np.full((3, 2), 0.5), np.ones(3), ConsensusSettings())
    logits = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0]], requires_grad=True)
    loss = t(logits, torch.as_tensor(labels), torch.arange(3))
    loss.backward()
    assert logits.grad is not None
    t.end_epoch(2)
    assert int(t.epochs_seen) == 1 and torch.allclose(t.ensemble, logits.detach().softmax(1))
    # sample 1 disagrees with both detector and model: its weight falls below the others'
    assert t.w[1] < t.w[0] and t.w[1] < t.w[2]


def test_end_epoch_keeps_the_detector_score():
    """The re-estimated score is a mix of the detector's and the model's: the detector's own stays as it was
    (it shared memory with the running score on the CPU, so from epoch 2 the mix drifted)."""
    det = np.array([0.9, 0.2, 0.8, 0.7])
    t = RefurbishedTargets(np.array([0, 1, 1, 0]), det, np.full((4, 2), 0.5), np.ones(4), ConsensusSettings())
    t(torch.tensor([[0.0, 3.0], [3.0, 0.0], [0.0, 3.0], [3.0, 0.0]]), torch.tensor([0, 1, 1, 0]), torch.arange(4))
    t.end_epoch(2)
    assert np.array_equal(t.det_score.numpy(), det) and not np.array_equal(t.score.numpy(), det)


def test_mixture_weight_follows_the_predictor_that_explains_held_out_labels():
    """The share of the second predictor is 0 when only the first predicts the held-out labels, 1 when only the
    second does, and in between when each is right on a different half; the noise process scales, not decides."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    right, wrong = np.eye(3)[y] * 0.8 + 0.2 / 3, np.eye(3)[(y + 1) % 3] * 0.8 + 0.2 / 3
    T = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    assert cd.mixture_weight(right, wrong, y, T)[0] == 0.0
    assert cd.mixture_weight(wrong, right, y, T)[0] == 1.0
    half = np.where((np.arange(200) < 100)[:, None], right, wrong)
    other = np.where((np.arange(200) < 100)[:, None], wrong, right)
    assert 0.3 <= cd.mixture_weight(half, other, y, T, z_min=0)[0] <= 0.7
    # the margin: a predictor right on only 3 more of the 200 samples is not clearly better (z = √3 at most)
    three = half.copy()
    three[100:103] = right[100:103]
    share, z = cd.mixture_weight(half, three, y, T, default=0.5, z_min=2.0)
    assert share == 0.5 and 0 < z < 2.0
    assert cd.mixture_weight(half, three, y, T, default=0.5, z_min=0.0)[0] == 1.0


def _val_targets(rule: str):
    labels, val_labels = np.array([0, 1, 1, 0]), np.arange(40) % 2
    T = np.array([[0.9, 0.1], [0.1, 0.9]])
    det_val = np.full((40, 2), 0.5)  # the detector knows nothing about the split
    t = RefurbishedTargets(labels, np.ones(4), np.full((4, 2), 0.5), np.ones(4), ConsensusSettings(model_weight_from=rule),
                           transition=T, val_probs=det_val, val_labels=val_labels)
    t(torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [3.0, 0.0]]), torch.as_tensor(labels), torch.arange(4))
    sure = np.linspace(0.7, 0.99, 40)[:, None]  # the model predicts every held-out label, some more surely
    t.end_epoch(2, np.eye(2)[val_labels] * sure + (1 - sure) / 2)
    return t


def test_model_weight_from_val_refits_the_model_s_share_in_the_prediction():
    fixed, fitted = _val_targets("fixed"), _val_targets("val")
    assert float(fixed.weight) == 0.5 and len(fixed.val_labels) == 0  # fixed: model_weight, no split kept
    assert float(fitted.weight) == 1.0  # the model explains the split, the detector does not
    assert torch.allclose(fitted.prediction(), fitted.ensemble)
    assert torch.allclose(fixed.prediction(), 0.5 * fixed.det_probs + 0.5 * fixed.ensemble)
    # the score keeps model_weight under both rules
    assert torch.allclose(fixed.score, fitted.score)
    # a checkpoint written before the rule loads into targets built without a split (the fixed share), and one
    # written with it into a placeholder of any size (a resumed run does not rerun the detector)
    old = {k: v for k, v in fixed.state_dict().items() if k not in ("weight", "val_det", "val_labels")}
    again = RefurbishedTargets(np.array([0, 1, 1, 0]), np.zeros(4), np.full((4, 2), 0.5), np.ones(4), ConsensusSettings(),
                               transition=np.eye(2))
    again.load_state_dict(old)
    assert float(again.weight) == 0.5
    again.load_state_dict(fitted.state_dict())
    assert float(again.weight) == 1.0 and again.val_labels.tolist() == fitted.val_labels.tolist()


def test_targets_keep_the_detector_verdict_and_load_checkpoints_written_before_it():
    """issues() reports the verdict the detector handed over (a resumed run reports the same); a checkpoint from
    before the verdict was kept loads and falls back to the prediction's posterior."""
    labels, probs = np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    T, verdict = np.array([[0.6, 0.4], [0.4, 0.6]]), np.array([False, False, True, True])
    t = RefurbishedTargets(labels, np.ones(4), probs, np.ones(4), ConsensusSettings(), transition=T, verdict=verdict)
    assert t.issues().tolist() == verdict.tolist()
    old = {k: v for k, v in t.state_dict().items() if k not in ("verdict", "has_verdict")}
    fresh = RefurbishedTargets(labels, np.zeros(4), np.full((4, 2), 0.5), np.ones(4), ConsensusSettings(), transition=T,
                               verdict=np.zeros(4, bool))
    fresh.load_state_dict(old)
    assert fresh.issues().tolist() == cd.posterior_issues(cd.label_posterior(probs, labels, T), labels).tolist()
    assert fresh.issues().tolist() == [False, True, False, True]  # the prediction outweighs labels 1 and 3


def test_consensus_reports_the_final_posterior_verdict_once_fine_tuning_has_run():
    """issues_from=final: after a fine-tuning epoch is_label_issue is the expected-F1 verdict of the targets' own
    posterior (the detector's prediction mixed with the model's ensemble, under the detector's T), not the
    detector's, and label_quality averages that posterior's probability of the given label into the score; before
    any epoch, without final_verdict, or from a checkpoint written before it: the detector's verdict, the score."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    T, verdict = np.array([[0.8, 0.2], [0.2, 0.8]]), np.array([False, False, False, False, False, True])
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [-4.0, 4.0], [0.0, 4.0], [0.0, 4.0], [0.0, 4.0]])

    def trained(final: bool) -> RefurbishedTargets:
        t = RefurbishedTargets(labels, np.ones(6), probs, np.ones(6), ConsensusSettings(), transition=T,
                               verdict=verdict, final_verdict=final)
        assert t.issues().tolist() == verdict.tolist()  # no epoch yet: the detector's
        t(logits, torch.as_tensor(labels), torch.arange(6))
        t.end_epoch(2)
        return t

    t = trained(True)
    final = cd.posterior_issues(t.post.numpy(), labels)
    assert t.issues().tolist() == final.tolist()
    # label_quality: the consensus score averaged with the final posterior's probability of the given label
    given = t.post.numpy()[np.arange(6), labels]
    np.testing.assert_allclose(t.label_quality(), (t.score.numpy() + given) / 2, rtol=1e-6)
    assert not np.allclose(t.label_quality(), t.score.numpy())
    # the model sees sample 2 (labelled 0) as class 1 and agrees with label 5, which the detector doubted
    assert final[2] and not final[5] and final.tolist() != verdict.tolist()
    detector_only = trained(False)
    assert detector_only.issues().tolist() == verdict.tolist()
    np.testing.assert_array_equal(detector_only.label_quality(), detector_only.score.numpy())
    old = {k: v for k, v in t.state_dict().items() if k != "final_verdict"}
    resumed = RefurbishedTargets(labels, np.ones(6), probs, np.ones(6), ConsensusSettings(), transition=T,
                                 verdict=verdict, final_verdict=True)
    resumed.load_state_dict(old)
    assert resumed.issues().tolist() == verdict.tolist()  # as that run reported


def test_final_verdict_only_under_the_prediction_s_own_noise_model():
    """consensus keeps the detector's verdict when issues_from=detector, or when the detector's held-out test chose
    another noise model than the prediction's (the final posterior is computed under the prediction's T)."""
    from noisyft.methods.consensus import Detection, final_verdict

    det = Detection(np.ones(2), np.ones(2), np.full((2, 2), 0.5), None, None, np.zeros(2, bool))
    assert final_verdict(ConsensusSettings(), det)
    assert not final_verdict(ConsensusSettings(issues_from="detector"), det)
    assert not final_verdict(ConsensusSettings(), det._replace(noise_model="oof"))


def test_symmetric_noise_model_keeps_the_mean_rate_and_spreads_the_rest_evenly():
    """symmetric_noise_model: one noise rate (the label-weighted mean of T's diagonal) for every class, its wrong labels
    spread evenly over the other classes, rows summing to 1."""
    T = np.array([[0.9, 0.1, 0.0], [0.0, 0.6, 0.4], [0.2, 0.0, 0.8]])
    labels = np.array([0, 0, 1, 2])  # weights 2/4, 1/4, 1/4: mean diagonal 0.8
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    m = cd.symmetric_noise_model(probs, labels, T)
    np.testing.assert_allclose(np.diag(m.transition), 0.8)
    np.testing.assert_allclose(m.transition[~np.eye(3, dtype=bool)], 0.1)
    np.testing.assert_allclose(m.transition.sum(1), 1.0)
    assert m.tau > 0


def _detection_with_noise(flip, seed: int = 0):
    """A Detection on 4 classes (600 training and 600 validation samples, the prediction 70 % on the true class and
    10 % on each other) whose labels were flipped by ``flip(true, rng)`` at 30 %: its noise (the confident joint's
    T) and its calibrated validation prediction, as run_detector makes them."""
    from noisyft.methods.consensus import Detection

    rng = np.random.default_rng(seed)

    def draw(n):
        true = rng.integers(0, 4, n)
        probs = np.full((n, 4), 0.1)
        probs[np.arange(n), true] = 0.7
        labels = np.where(rng.random(n) < 0.3, flip(true, rng), true)
        return probs, labels

    (probs, labels), (val_probs, val_labels) = draw(600), draw(600)
    fitted = cd.fit_noise_model(probs, labels)
    det = Detection(np.ones(600), np.ones(600), probs, None, (fitted.calibrated(probs), fitted.transition),
                    np.zeros(600, bool), val_probs=fitted.calibrated(val_probs))
    return det, labels, val_labels


@pytest.mark.parametrize("noise, expected", [("symmetric", "symmetric"), ("pairs", "full")])
def test_final_noise_auto_keeps_the_symmetric_model_only_where_heldout_labels_do_not_reject_it(noise, expected):
    """final_noise=auto: the symmetric noise process where the noise is symmetric; where every wrong label is the next
    class (pair flips) the held-out labels reject it (z far below −verdict_z) and the full T stays; full/symmetric
    force their choice; without a validation split: the full T."""
    from noisyft.methods.consensus import final_noise_model

    flips = {"symmetric": lambda true, rng: (true + rng.integers(1, 4, len(true))) % 4,
             "pairs": lambda true, rng: (true + 1) % 4}
    det, labels, val_labels = _detection_with_noise(flips[noise])
    model, stats = final_noise_model(det, labels, val_labels, ConsensusSettings())
    assert stats["final_noise"] == expected and (model is None) == (expected == "full")
    assert (stats["final_noise_z"] < -10) == (noise == "pairs")
    assert final_noise_model(det, labels, val_labels, ConsensusSettings(final_noise="full"))[0] is None
    assert final_noise_model(det, labels, val_labels, ConsensusSettings(final_noise="symmetric"))[0] is not None
    assert final_noise_model(det, labels, None, ConsensusSettings())[0] is None
    assert final_noise_model(det, labels, val_labels, ConsensusSettings(issues_from="detector")) == (None, {})


def test_the_final_verdict_and_ranking_under_the_symmetric_noise_model():
    """With a final noise model, is_label_issue and label_quality come from the posterior of the same prediction
    (the detector's, recalibrated to it, mixed with the model's ensemble) under that model's T, not the targets'
    own; fine-tuning's targets keep T; a checkpoint written before final_noise reports under T, as it did then."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    T = np.array([[0.95, 0.05], [0.6, 0.4]])
    sym = cd.NoiseModel(np.array([[0.7, 0.3], [0.3, 0.7]]), 0.5)
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [-4.0, 4.0], [0.0, 4.0], [0.0, 4.0], [0.0, 4.0]])

    def trained(final_noise):
        t = RefurbishedTargets(labels, np.ones(6), probs, np.ones(6), ConsensusSettings(), transition=T,
                               verdict=np.zeros(6, bool), final_verdict=True, final_noise=final_noise)
        t(logits, torch.as_tensor(labels), torch.arange(6))
        t.end_epoch(2)
        return t

    full, t = trained(None), trained(sym)
    np.testing.assert_allclose(t.post.numpy(), full.post.numpy())  # the targets: T's posterior either way
    pred = 0.5 * cd.temper(probs, 0.5) + 0.5 * t.ensemble.double().numpy()
    post = cd.label_posterior(pred, labels, sym.transition)
    np.testing.assert_allclose(t.final_posterior(), post, rtol=1e-6)
    assert t.issues().tolist() == cd.posterior_issues(post, labels).tolist()
    np.testing.assert_allclose(t.label_quality(), (t.score.numpy() + post[np.arange(6), labels]) / 2, rtol=1e-6)
    assert not np.allclose(t.label_quality(), full.label_quality())
    old = {k: v for k, v in t.state_dict().items() if k not in ("final_T", "final_tau")}
    resumed = RefurbishedTargets(labels, np.ones(6), probs, np.ones(6), ConsensusSettings(), transition=T,
                                 verdict=np.zeros(6, bool), final_verdict=True)
    resumed.load_state_dict(old)
    np.testing.assert_allclose(resumed.label_quality(), full.label_quality(), rtol=1e-6)
    again = RefurbishedTargets(labels, np.ones(6), probs, np.ones(6), ConsensusSettings(), transition=T,
                               verdict=np.zeros(6, bool), final_verdict=True)
    again.load_state_dict(t.state_dict())  # a resumed run keeps its final noise model
    np.testing.assert_allclose(again.label_quality(), t.label_quality(), rtol=1e-6)


def _target_loss(transition=None, **settings) -> float:
    """The fine-tuning loss on one sample labelled 0 that the detector flags and predicts as class 1 (p = 0.7)."""
    s = ConsensusSettings(elr_lambda=0.0, **{"relabel": "flagged", **settings})
    t = RefurbishedTargets(np.array([0]), np.array([0.1]), np.array([[0.3, 0.7]]), np.array([0.2]), s,
                           flags=np.array([True]), transition=transition)
    return float(t(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.arange(1)))


def test_label_posterior_weighs_the_prediction_by_the_noise_process():
    """Bayes' rule: a 0.7 prediction against the given label wins only where the noise process makes the label
    unlikely (a flat T), not at 20 % noise (T's diagonal 0.8); rows sum to 1."""
    p, y = np.array([[0.3, 0.7]]), np.array([0])
    low = cd.label_posterior(p, y, np.array([[0.8, 0.2], [0.2, 0.8]]))
    high = cd.label_posterior(p, y, np.array([[0.55, 0.45], [0.45, 0.55]]))
    assert low.argmax(1)[0] == 0 and high.argmax(1)[0] == 1
    assert np.allclose(low.sum(1), 1) and np.allclose(high, [[0.165 / 0.48, 0.315 / 0.48]], atol=1e-6)


def test_noise_transition_recovers_a_known_flip_rate():
    """30 % of class 0 given as class 1 under a confident, correct prediction: T[0, 1] ≈ 0.3, T[1, 1] ≈ 1; and
    bayes_issues flags exactly the flipped samples."""
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1], 500)
    given = true.copy()
    flipped = rng.permutation(500)[:150]
    given[flipped] = 1
    probs = np.where(np.eye(2)[true] > 0, 0.9, 0.1)
    T = cd.noise_transition(probs, given)
    assert T[0, 1] == pytest.approx(0.3, abs=0.03) and T[1, 1] == pytest.approx(1.0, abs=0.03)
    post, issues = cd.bayes_issues(probs, given)
    assert set(np.flatnonzero(issues)) == set(flipped)


def _weak_detector(flip: float, n: int = 3000, classes: int = 4, seed: int = 0):
    """A detector wrong on a quarter of the samples, confidently (0.7 on another class, 0.2 on the true one), and
    labels with a share ``flip`` moved to another class at random: (probs, given, true)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    mistaken = rng.random(n) < 0.25
    other = (true + rng.integers(1, classes, n)) % classes
    probs = np.full((n, classes), 0.05)
    probs[np.arange(n), true] = np.where(mistaken, 0.2, 0.85)
    probs[np.arange(n), other] = np.where(mistaken, 0.7, 0.05)
    given = true.copy()
    flipped = rng.random(n) < flip
    given[flipped] = (true[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return probs, given, true


@pytest.mark.parametrize("flip", [0.0, 0.2])
def test_mpe_noise_rates_do_not_count_a_weak_detector_s_mistakes_as_noise(flip):
    """The confident joint counts the detector's confident mistakes as wrong labels (≥ 0.15 too many); the
    mixture-proportion estimate does not (within 0.03 of the realised rate), nor T with its rates."""
    probs, given, true = _weak_detector(flip)
    realised = float((given != true).mean())
    rates = cd.mpe_noise_rates(probs, given)
    assert confident_joint_rates(given, probs)[0] - realised >= 0.15
    assert abs(float(np.bincount(given, minlength=4) @ rates / len(given)) - realised) <= 0.03
    T = cd.noise_transition(probs, given, rates)
    assert abs(float(1 - T[given, given].mean()) - realised) <= 0.03
    assert np.allclose(cd.mpe_noise_rates(probs, given, max_reference=1500), rates, atol=0.03)  # a subsampled reference


def test_with_noise_rates_sets_each_given_class_s_rate_and_keeps_its_mass_and_shape():
    joint = np.array([[0.30, 0.06, 0.04], [0.0, 0.30, 0.0], [0.05, 0.05, 0.20]])  # [given, true]
    out = cd.with_noise_rates(joint, np.array([0.5, 0.2, 0.0]))
    assert np.allclose(out.sum(1), joint.sum(1))
    assert np.allclose(1 - np.diag(out) / out.sum(1), [0.5, 0.2, 0.0])
    assert out[0, 1] / out[0, 2] == pytest.approx(0.06 / 0.04)  # where the wrong labels come from: the joint's
    assert out[1, 0] == pytest.approx(out[1, 2]) == pytest.approx(0.03)  # none in the joint: spread evenly


def test_expected_f1_flags_picks_the_set_the_probabilities_expect_to_score_best():
    """q = [0.9, 0.05, 0.8, 0.3]: flagging the top two expects F1 2·1.7 / (2 + 2.05) = 0.84, more than one (0.59) or
    three (0.79); the order of the samples does not matter; all-zero q flags nothing."""
    assert cd.expected_f1_flags(np.array([0.9, 0.05, 0.8, 0.3])).tolist() == [True, False, True, False]
    assert cd.expected_f1_flags(np.array([0.3, 0.8, 0.05, 0.9])).tolist() == [False, True, False, True]
    assert not cd.expected_f1_flags(np.zeros(5)).any() and cd.expected_f1_flags(np.zeros(0)).shape == (0,)


def test_posterior_issues_flag_a_probably_wrong_label_that_no_other_class_outweighs():
    """A label the posterior gives 0.3 while no other class reaches 0.3 is probably wrong: flagged (the arg-max rule
    kept it), beside a clear flip; a label at 0.95 is not."""
    post = np.array([[0.3, 0.25, 0.25, 0.2], [0.95, 0.05, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]])
    labels = np.array([0, 0, 1])
    assert cd.posterior_issues(post, labels).tolist() == [True, False, True]
    assert (post.argmax(1) != labels).tolist() == [False, False, True]


def _noisy_world(n: int, flip: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """(true classes, given labels) of ``n`` samples, 4 classes, a share ``flip`` of labels replaced by another class."""
    true = rng.integers(0, 4, n)
    flipped = rng.random(n) < flip
    return true, np.where(flipped, (true + rng.integers(1, 4, n)) % 4, true)


def _confident(classes: np.ndarray, p: float = 0.7) -> np.ndarray:
    """Class distributions putting ``p`` on ``classes`` and the rest evenly on the other three."""
    out = np.full((len(classes), 4), (1 - p) / 3)
    out[np.arange(len(classes)), classes] = p
    return out


def _choose(candidates: dict, labels, val_labels, default: str, *z_min) -> tuple[str, dict]:
    """choose_noise_model on name → (training class distributions, held-out ones), each model fitted here."""
    models = {name: cd.fit_noise_model(train, labels) for name, (train, _) in candidates.items()}
    return cd.choose_noise_model(models, {name: val for name, (_, val) in candidates.items()}, val_labels, default, *z_min)


def test_held_out_labels_choose_the_noise_model_that_did_not_fit_the_labels():
    """At 75 % noise a detector that has fitted the training labels explains them with little noise and so mispredicts
    held-out labels; one that predicts the true class (as out-of-fold probes do) wins there, by a wide margin."""
    rng = np.random.default_rng(0)
    true, given = _noisy_world(2000, 0.75, rng)
    vtrue, vgiven = _noisy_world(400, 0.75, rng)
    fitted = (_confident(given), _confident(vtrue))     # in sample it predicts the given label; held out, the class
    honest = (_confident(true), _confident(vtrue))
    chosen, z = _choose({"prediction": fitted, "oof": honest}, given, vgiven, "prediction")
    assert chosen == "oof" and z["oof"] > 5
    # the same evidence under a margin it does not reach, and a candidate equal to the default: the default stays
    assert _choose({"prediction": fitted, "oof": honest}, given, vgiven, "prediction", 1e9)[0] == "prediction"
    chosen, z = _choose({"prediction": honest, "cotrain": honest}, given, vgiven, "prediction")
    assert chosen == "prediction" and z["cotrain"] == 0.0


def test_relabel_options_choose_the_target():
    keep = _target_loss(relabel="none")  # CE on the given label 0, which the logits favour: small
    flagged = _target_loss()  # target = sharpen(p) ≈ class 1: large
    # posterior: the prediction wins under a flat noise process, the label under a 20 % one
    high = _target_loss(relabel="posterior", transition=np.array([[0.55, 0.45], [0.45, 0.55]]))
    low = _target_loss(relabel="posterior", transition=np.array([[0.8, 0.2], [0.2, 0.8]]))
    assert high > keep + 1.0 and high > low + 1.0 and low < keep + 0.6
    assert keep == pytest.approx(float(torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))))
    assert flagged > keep + 1.0
    assert _target_loss(relabel_min_conf=0.8) == pytest.approx(keep)  # top probability 0.7 < 0.8: label kept
    assert _target_loss(relabel_min_conf=0.6) == pytest.approx(flagged)
    # GCE on the kept label: (1 − p_0^q) / q with q 0.7
    p0 = float(torch.tensor([2.0, 0.0]).softmax(0)[0])
    assert _target_loss(relabel="none", base_loss="gce") == pytest.approx((1 - p0 ** 0.7) / 0.7, rel=1e-5)
    # SCE on the kept label: CE + reverse CE, −Σ_k p_k log t_k with log 0 := log 1e-4 (as sce-fft with α = β = 1)
    rce = -(1 - p0) * np.log(1e-4)
    assert _target_loss(relabel="none", base_loss="sce") == pytest.approx(keep + rce, rel=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import write_splits

    root = write_splits(tmp_path_factory.mktemp("consensus") / "imgs", 40, 10)
    full = api.fit(data=str(root), noise="symflip:0.3", method="consensus", val_fraction=0.2,
                   out=str(root.parent / "run"), seed=3, **TINY)
    det = api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(root.parent / "det"), seed=3, **TINY)
    return full, det


def test_consensus_ranks_wrong_labels_and_trains_on_everyone(runs):
    full, _ = runs
    d = full.run_dir
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    sel = [json.loads(line) for line in (d / "selection.jsonl").read_text().splitlines()]
    mine = [r for r in sel if "auroc_consensus" in r]  # UNICON-LP's own selection steps come first
    # the co-trained heads' epochs (all 15: too few samples to halve them), then fft:0 (the refurbished start) … fft:2
    assert mine[0]["cotrain_epochs"] == 15 and 0 <= mine[0]["noise_estimate_oof"] <= 1
    assert mine[0]["components"] == ["oof", "cotrain"]  # the probes stay in the prediction (the rule is opt-in)
    # with a validation split the verdict's noise model is chosen on it, against both components alone
    assert mine[0]["verdict_noise_model"] in ("prediction", "oof", "cotrain")
    assert set(k for k in mine[0] if k.startswith("verdict_z_")) == {"verdict_z_oof", "verdict_z_cotrain"}
    assert [m["phase"] for m in metrics] == ["lp"] * mine[0]["cotrain_epochs"] + ["fft"] * 3
    # injected noise: each epoch's validation accuracy against the split's true labels too, a diagnostic
    assert all(0 <= m["val_true_acc"] <= 1 for m in metrics)
    assert any(m["val_true_acc"] != m["val_acc"] for m in metrics)  # 40 % of the split's labels are wrong
    n = len(pd.read_csv(d / "labels.csv"))
    assert [m.get("n_train") for m in metrics if m["phase"] == "fft"] == [None, n, n]  # every training sample, none discarded
    assert [m.get("model_weight") for m in metrics if m["phase"] == "fft"] == [None, 0.5, 0.5]  # fixed by default
    det = full.summary["detection"]
    assert det["auroc"] > 0.8 and det["issue_f1"] > 0.5  # random ranking: AUROC ~0.5, F1 ~0.3
    assert len(mine) == 1 and mine[0]["epoch"] == 0
    assert mine[0]["auroc_consensus"] > 0.8 and mine[0]["precision"] > 0.85  # ~0.7 of the labels are clean
    assert full.summary["fine_tuned"]["best_test_acc"] > 0.6
    assert full.summary["test_acc_epoch"] == full.summary["fine_tuned"]["val_selected_epoch"]
    df = pd.read_csv(d / "label_issues.csv")
    assert df["label_quality"].is_monotonic_increasing
    assert df["is_label_issue"].sum() == det["n_flagged"] > 0


def test_consensus_returns_the_checkpoint_its_validation_rule_delivers(runs):
    full, _ = runs
    d = full.run_dir
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    candidates = [m for m in metrics if m["phase"] == "fft"]  # fft:0 is the refurbished-head start
    best = max(candidates, key=lambda m: m["val_acc"])  # first of the ties, as the method keeps
    last = candidates[-1]
    note = [r for r in (json.loads(x) for x in (d / "selection.jsonl").read_text().splitlines()) if "delivered_epoch" in r]
    assert len(note) == 1 and note[0]["best_val_epoch"] == f"fft:{best['epoch']}"
    z = note[0]["delivered_z"]
    want = best if best is last or z >= 2.0 else last  # the last unless the best beats it by 2 paired SEs
    assert note[0]["delivered_epoch"] == full.summary["delivered_epoch"] == f"fft:{want['epoch']}"
    assert full.summary["test_acc"] == want["test_acc"] and full.summary["test_acc_epoch"] == f"fft:{want['epoch']}"
    if want is not best:
        assert full.summary["fine_tuned"]["val_argmax_test_acc"] == best["test_acc"]
    from noisyft.api import load_model

    model, _ = load_model(d)
    fresh = api.predict(d, str(d.parent / "imgs" / "test"), num_workers=0, progress=False)
    acc = (fresh["predicted_class"] == fresh["id"].str.split("/").str[0]).mean()
    assert acc == pytest.approx(want["test_acc"])


def _offered(hits_by_epoch: list, val_accs: list):
    """A delivery tracker offered one checkpoint per epoch (a 1-parameter model whose weight is its epoch)."""
    from noisyft.methods.consensus import _Delivery

    delivery, model = _Delivery(), torch.nn.Linear(1, 1)
    for epoch, (hits, acc) in enumerate(zip(hits_by_epoch, val_accs)):
        model.weight.data.fill_(epoch)
        delivery.offer(acc, f"fft:{epoch}", model, None if hits is None else np.asarray(hits, dtype=bool))
    return delivery


def test_delivery_keeps_the_last_epoch_unless_validation_clearly_prefers_another():
    from noisyft.methods.consensus import delivered_checkpoint

    rng = np.random.default_rng(0)
    last = rng.random(400) < 0.5
    near = last.copy()
    near[np.flatnonzero(~last)[:20]] = True
    near[np.flatnonzero(last)[:14]] = False  # 6 more right of 34 that differ: within noise (z ~1)
    far = last.copy()
    far[np.flatnonzero(~last)[:40]] = True
    far[np.flatnonzero(last)[:10]] = False  # 30 more right of 50 that differ: clear (z ~4.6)
    for earlier, clear in ((near, False), (far, True)):
        delivery = _offered([earlier, rng.random(400) < 0.3, last], [earlier.mean(), 0.3, last.mean()])
        where, z = delivered_checkpoint(delivery, 2.0)
        assert delivery.where == "fft:0" and where == ("fft:0" if clear else "fft:2"), (where, z)
        assert (z >= 2.0) == clear and z > 0
        assert delivered_checkpoint(delivery, 0.0)[0] == "fft:0"  # z_min 0: the arg-max, as before the rule
        assert delivery.weights["weight"].item() == 0  # the best's weights are kept for delivery
    # the best is the last: nothing to test
    delivery = _offered([last, near], [last.mean(), near.mean()])
    assert delivered_checkpoint(delivery, 2.0) == ("fft:1", 0.0)
    # state without validation hits (a checkpoint from before the rule): its best is delivered
    restored = _offered([None], [0.4])
    restored.load_state_dict({"val_acc": 0.9, "where": "fft:0", "weights": None})
    restored.offer(0.5, "fft:1", torch.nn.Linear(1, 1), last)
    assert delivered_checkpoint(restored, 2.0) == ("fft:0", None)


def test_consensus_detect_alone(runs):
    _, det = runs
    sel = [json.loads(line) for line in (det.run_dir / "selection.jsonl").read_text().splitlines()]
    assert not any("verdict_noise_model" in r for r in sel)  # no validation split: the prediction's noise model
    metrics = [json.loads(line) for line in (det.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["phase"] == "lp" for m in metrics)
    assert det.summary["detection"]["auroc"] > 0.8
    assert "fft" not in det.summary["timings"]


ARGS = ["--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "5",
        "--epochs-fft", "2", "--batch-size", "16", "--num-workers", "0", "--no-progress", "--noise", "sym:0.4",
        "--seed", "7", "--method", "consensus", "--val-fraction", "0.2"]


def _fit(data, out, cache, kill_at=None, extra=()):
    env = {**os.environ, "NOISYFT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    if kill_at:
        env["NOISYFT_KILL_AT"] = kill_at
    args = [*ARGS, *(a for e in extra for a in ("--extra", e))]
    return subprocess.run([sys.executable, "-m", "noisyft", "fit", "--data", str(data), "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra", [(), ("model_weight_from=val",)])
def test_killed_consensus_run_resumes_bit_identical(tmp_path, extra):
    """Also with the model's share refitted on validation: the resumed targets keep the share and the split's
    detector prediction, which the resumed run does not recompute."""
    from tests.conftest import write_splits

    data = write_splits(tmp_path / "imgs", 30, 5)
    ref = _fit(data, tmp_path / "ref", tmp_path / "cache", extra=extra)
    assert ref.returncode == 0, ref.stderr
    killed = _fit(data, tmp_path / "run", tmp_path / "cache", kill_at="train:2:1", extra=extra)
    assert killed.returncode == -9
    assert json.loads((tmp_path / "run" / "progress.json").read_text()) == {"tag": "consensus", "epoch": 1}
    resumed = _fit(data, tmp_path / "run", tmp_path / "cache", extra=extra)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("metrics.jsonl", "selection.jsonl", "label_issues.csv"):
        assert (tmp_path / "run" / name).read_text() == (tmp_path / "ref" / name).read_text(), name
    a, b = load_file(str(tmp_path / "run" / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_defaults_are_the_benchmarks_best_method_and_detector():
    """fit's default method and detect's default detector are the committed benchmarks' choices (README: Defaults)."""
    from noisyft.cli import DETECT_DEFAULTS, build_parser, config_from_args
    from noisyft.config import FitConfig

    assert FitConfig().method == "consensus"
    assert config_from_args(build_parser().parse_args(["detect"]), DETECT_DEFAULTS).method == "consensus-detect"
    assert config_from_args(build_parser().parse_args(["detect", "--method", "turn"]), DETECT_DEFAULTS).method == "turn"
    assert api.DEMO["method"] == "turn"  # the demo shows TURN, timed in the README


def test_head_init_changes_only_where_fine_tuning_starts(tmp_path):
    """Both starts log the same epoch 0 (the refurbished head on the pretrained backbone, a delivery candidate);
    the fresh head (the default) then trains differently from the refurbished one."""
    from tests.conftest import write_splits

    root = write_splits(tmp_path / "imgs", 30, 6)
    recs = {}
    for init in ("fresh", "refurbished"):
        r = api.fit(data=str(root), noise="symflip:0.3", method="consensus", val_fraction=0.2, seed=1,
                    out=str(tmp_path / init), extra={"head_init": init}, **{**TINY, "epochs_fft": 1})
        recs[init] = [json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines() if '"fft"' in x]
    (f0, f1), (r0, r1) = recs["fresh"], recs["refurbished"]
    assert f0["epoch"] == r0["epoch"] == 0 and f0["val_acc"] == r0["val_acc"] and f0["test_acc"] == r0["test_acc"]
    assert f1["train_loss"] != pytest.approx(r1["train_loss"], rel=1e-3)
    assert ConsensusSettings().head_init == "fresh"


def test_cotrain_epochs_sets_the_co_trained_heads_epochs_only(tmp_path):
    """cotrain_epochs runs UNICON-LP's heads for that many epochs (warm-up included); the out-of-fold probes and the
    refurbished head keep --epochs-lp."""
    from tests.conftest import write_splits

    root = write_splits(tmp_path / "imgs", 20, 5)
    res = api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(tmp_path / "det"), seed=1,
                  extra={"cotrain_epochs": 7}, **{**TINY, "epochs_lp": 9})
    lp = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lp if m["phase"] == "lp"] == [1, 2, 3, 4, 5, 6, 7, 10]  # 10: the refurbished head
    assert lp[-1]["stage"] == "refurbished head"


@pytest.mark.parametrize("head_batch, expected", [(None, 32), (48, 48)])
def test_head_batch_size_sets_every_cached_feature_head_s_batch(tmp_path, monkeypatch, head_batch, expected):
    """head_batch_size is the batch of the out-of-fold probes, the co-trained heads (UNICON-LP halves it for its two
    loaders) and the refurbished head; unset, the run's --batch-size."""
    from noisyft.methods import consensus, linear_probe, mixmatch
    from tests.conftest import write_splits

    seen: dict[str, set] = {"probes": set(), "cotrain": set(), "refurbished": set()}

    def spy(module, name, key):
        real = getattr(module, name)

        def wrapped(*args, **kw):
            seen[key].add(kw["batch_size"])
            return real(*args, **kw)
        monkeypatch.setattr(module, name, wrapped)

    spy(linear_probe, "fit_probes", "probes")
    spy(mixmatch, "warmup_epoch", "cotrain")
    spy(mixmatch, "mixmatch_epoch", "cotrain")
    spy(consensus, "train_head_epoch", "refurbished")
    root = write_splits(tmp_path / "imgs", 20, 5)
    api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(tmp_path / "det"), seed=1,
            extra={"cotrain_epochs": 7, **({} if head_batch is None else {"head_batch_size": head_batch})},
            **{**TINY, "epochs_lp": 9})
    assert seen == {"probes": {expected}, "cotrain": {expected // 2}, "refurbished": {expected}}


@pytest.mark.parametrize("explicit, estimate, below, n, expected", [
    (7, 0.1, 0.5, 4500, 7),        # an explicit cotrain_epochs always wins
    (None, None, 0.5, 4500, 20),   # no out-of-fold probes: no estimate, full epochs
    (None, 0.3, 0.5, 4500, 10),    # low estimated noise: half
    (None, 0.3, 0.5, 1499, 20),    # too few samples for the halved schedule (default minimum 1,500)
    (None, 0.5, 0.5, 4500, 20),    # at the threshold: full
    (None, 0.8, 0.5, 4500, 20),
    (None, 0.3, 0.0, 4500, 20),    # 0 turns the rule off
])
def test_cotrain_epochs_rule(explicit, estimate, below, n, expected):
    from noisyft.methods.consensus import cotrain_epochs

    s = ConsensusSettings(cotrain_epochs=explicit, short_cotrain_below=below)
    assert cotrain_epochs(s, 20, estimate, n) == expected
    assert cotrain_epochs(ConsensusSettings(short_cotrain_below=0.9), 9, 0.1, 1500) == 5  # half, rounded up


@pytest.mark.parametrize("components, estimate, below, n, expected", [
    ("oof,cotrain", None, 0.5, 4500, ["oof", "cotrain"]),   # no estimate: as configured
    ("oof,cotrain", 0.3, 0.5, 4500, ["oof", "cotrain"]),    # low estimated noise: probes and heads averaged
    ("oof,cotrain", 0.5, 0.5, 4500, ["cotrain"]),           # at the threshold: the heads alone
    ("oof,cotrain", 0.8, 0.5, 1499, ["oof", "cotrain"]),    # too few samples (default minimum 1,500)
    ("oof,knn,cotrain", 0.8, 0.5, 4500, ["knn", "cotrain"]),
    ("oof", 0.8, 0.5, 4500, ["oof"]),                       # the probes alone stay: nothing else predicts
    ("oof,cotrain", 0.99, 1.0, 4500, ["oof", "cotrain"]),   # 1 turns the rule off
])
def test_prediction_components_rule(components, estimate, below, n, expected):
    s = ConsensusSettings(components=components, probes_predict_below=below)
    assert prediction_components(s, estimate, n) == expected


def test_probes_leave_the_prediction_when_the_rule_says_so(runs, tmp_path):
    """probes_predict_below=0 (any estimate) with no size minimum: the logged prediction components are the heads
    alone, and the prediction differs (the confident joint the report computes on it moves); the default run (the
    rule off) keeps the probes."""
    _, det = runs
    root = det.run_dir.parent / "imgs"
    heads = api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(tmp_path / "heads"), seed=3,
                    extra={"probes_predict_below": 0.0, "probes_predict_min_samples": 0}, **TINY)
    comps = [[m["components"] for m in (json.loads(x) for x in (r.run_dir / "selection.jsonl").read_text().splitlines())
              if "components" in m] for r in (det, heads)]
    assert comps == [[["oof", "cotrain"]], [["cotrain"]]]
    cj = [r.summary["noise_rate"]["confident_joint"]["overall"] for r in (det, heads)]
    assert cj[0] != cj[1]
    assert heads.summary["detection"]["auroc"] == det.summary["detection"]["auroc"]  # the ranking is the heads' score


@pytest.mark.parametrize("flip", [0.1, 0.4])
def test_estimated_noise_tracks_the_flipped_share(flip):
    """Out-of-fold probes on separable clusters: the confident joint's noise estimate is near the flipped share."""
    feats, given, true = _blobs(n_per_class=100, flip=flip)
    probs = cd.oof_probs(feats, given, 3, folds=5, epochs=30, optim=OptimConfig("adamw", 1e-2, 1e-5), seed=0)
    assert confident_joint_rates(given, probs)[0] == pytest.approx((given != true).mean(), abs=0.07)


def test_low_noise_estimate_halves_the_co_trained_heads_epochs(tmp_path):
    """With cotrain_epochs null the run logs the probes' estimate and the epochs the rule chose, and UNICON-LP's heads
    train that many (short_cotrain_below=1 and no minimum size: always half of --epochs-lp 9, rounded up)."""
    from tests.conftest import write_splits

    root = write_splits(tmp_path / "imgs", 20, 5)
    res = api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(tmp_path / "det"), seed=1,
                  extra={"short_cotrain_below": 1.0, "short_cotrain_min_samples": 0}, **{**TINY, "epochs_lp": 9})
    read = lambda name: [json.loads(x) for x in (res.run_dir / name).read_text().splitlines()]  # noqa: E731
    sel = [m for m in read("selection.jsonl") if "cotrain_epochs" in m]
    assert len(sel) == 1 and sel[0]["cotrain_epochs"] == 5 and 0 <= sel[0]["noise_estimate_oof"] <= 1
    assert [m["epoch"] for m in read("metrics.jsonl") if m["phase"] == "lp"] == [1, 2, 3, 4, 5, 10]


@pytest.mark.parametrize("extra, mpe", [({"noise_rates": "mpe"}, True), ({"noise_rates": "confident_joint"}, False),
                                        ({}, False)])  # the default
def test_noise_rates_setting_sets_the_noise_process_s_rates(tmp_path, monkeypatch, extra, mpe):
    """noise_rates=mpe: every noise model (the prediction's and the held-out candidates') takes the out-of-fold probes'
    mixture-proportion rates, logged as noise_estimate_mpe; confident_joint (the default) keeps each joint's own."""
    from tests.conftest import write_splits

    fitted = []
    real = cd.fit_noise_model
    monkeypatch.setattr(cd, "fit_noise_model", lambda probs, labels, r=None: fitted.append(r) or real(probs, labels, r))
    root = write_splits(tmp_path / "imgs", 20, 5)
    res = api.fit(data=str(root), noise="symflip:0.3", method="consensus-detect", out=str(tmp_path / "det"), seed=1,
                  val_fraction=0.2, extra=extra, **TINY)
    sel = [m for m in map(json.loads, (res.run_dir / "selection.jsonl").read_text().splitlines())
           if "noise_estimate_oof" in m][0]  # the detector's record
    assert len(fitted) == 3  # the prediction's, the probes' and the heads' noise models
    if mpe:
        assert all(r is not None and np.array_equal(r, fitted[0]) for r in fitted)
        assert 0 <= sel["noise_estimate_mpe"] <= 1
    else:
        assert fitted == [None] * 3 and "noise_estimate_mpe" not in sel


def test_prior_matched_takes_the_asked_class_prior_and_keeps_rows_distributions():
    """The design study's class-prior variant of the co-trained heads (new_method_design.py prior, §14; not a
    setting: measured worse on the balanced grids). The reweighted class distributions' mean is the asked prior;
    rows still sum to 1; the prior they already have is a no-op; on long-tailed labels it raises the posterior
    doubt about a tail label on a head-looking sample."""
    from benchmarks.new_method_design import prior_matched

    rng = np.random.default_rng(0)
    balanced = rng.dirichlet(np.ones(3), 400)
    prior = np.array([0.7, 0.2, 0.1])
    q = prior_matched(balanced, prior)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(q.mean(0), prior, atol=1e-6)
    np.testing.assert_allclose(prior_matched(q, prior), q, atol=1e-9)
    # a sample that looks 60:40 head vs tail under a balanced prior, labelled tail: more doubt with the data's prior
    T = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])
    x = np.vstack([[0.6, 0.0, 0.4], np.full((9, 3), 1 / 3)])
    doubt = lambda p: 1 - cd.label_posterior(p[:1], np.array([2]), T)[0, 2]  # noqa: E731
    assert doubt(prior_matched(x, prior)) > doubt(x)


def test_class_prior_rules():
    from benchmarks.new_method_design import class_prior

    labels = np.array([0, 0, 0, 1])
    probes = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(class_prior("labels", labels, probes, 2), [0.75, 0.25])
    np.testing.assert_allclose(class_prior("probes", labels, probes, 2), [0.75, 0.25])
    assert class_prior("balanced", labels, probes, 2) is None
    assert class_prior("probes", labels, None, 2) is None  # no probes in the prediction: the heads as trained
    np.testing.assert_allclose(class_prior("true", labels, probes, 2, np.eye(2)), [0.75, 0.25])  # no noise
    # true shares [0.9, 0.1] under T (class 0 keeps 0.8, sends 0.2 to class 1) give the labels [0.72, 0.28]
    T = np.array([[0.8, 0.2], [0.0, 1.0]])
    given = np.array([0] * 72 + [1] * 28)
    np.testing.assert_allclose(class_prior("true", given, probes, 2, T), [0.9, 0.1], atol=1e-9)
