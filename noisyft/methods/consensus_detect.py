"""A label-issue detector on cached features: a consensus of scores no model memorised.

A head trained on a sample agrees with that sample's label whether the label is
right or wrong (it memorises it), so a threshold on its own losses misses
memorised wrong labels. The detector therefore combines scores that do not share
that blind spot, each a number in [0, 1] where high means "the given label looks
right":

* ``oof``: out-of-fold probes (as cleanlab). The training set is split into K
  stratified folds; a fresh linear head (GCE by default in ``consensus``: measured
  0.82–0.96 AUROC against CE's 0.79–0.93) is trained on the other folds and
  scores the held-out one: its probability of the given label.
* ``knn``: feature-space neighbour agreement. The similarity-weighted share of a
  sample's k nearest neighbours (cosine on the frozen features, itself excluded)
  whose given label equals its own; their label distribution is a prediction no
  head fitted.
* ``cotrain``: UNICON-LP's two heads co-trained with JSD uniform selection and
  MixMatch (see :mod:`noisyft.methods.unicon`), scored by 1 − JSD between their
  mean prediction and the one-hot label (samples they treat as unlabelled are
  never fitted to their labels).

The ensemble score is the mean of the chosen components' *ranks* (each scaled to
[0, 1]), so no component dominates by scale. Its soft prediction (a refurbished
label for fine-tuning) is the mean of the components' class distributions.

Everything here is a pure function of (features, labels) except
:func:`cotrain_scores`, which runs UNICON-LP through a :class:`Context`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisyft.config import OptimConfig
from noisyft.methods.linear_probe import FoldProbes, fit_out_of_fold
from noisyft.run.noise_rate import calibrated_joint
from noisyft.selection import fit_per_class_gmm

COMPONENTS = ("oof", "knn", "cotrain")


@dataclass
class DetectorScores:
    """Per-sample scores (high = given label looks right) and class distributions of each component."""

    scores: dict = field(default_factory=dict)   # name → (N,) float in [0, 1]
    probs: dict = field(default_factory=dict)    # name → (N, C) class distribution (rows sum to 1)
    val_probs: dict = field(default_factory=dict)  # name → (M, C) on held-out samples (the validation split), if asked


def rank01(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` scaled to [0, 1] (ties share their mean rank); 0.5 for a single sample."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.full(len(x), 0.5)
    return (rankdata(x) - 1.0) / (len(x) - 1.0)


def ensemble_score(scores: Sequence[np.ndarray], how: str = "rank") -> np.ndarray:
    """Mean of the components' ranks (``rank``) or of their raw scores (``mean``)."""
    if not scores:
        raise ValueError("no detector component to combine")
    if how == "rank":
        return np.mean([rank01(s) for s in scores], axis=0)
    if how == "mean":
        return np.mean([np.asarray(s, dtype=np.float64) for s in scores], axis=0)
    raise ValueError(f"unknown combination {how!r} (rank, mean)")


def oof_probs(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int = 5, epochs: int = 20,
              optim: OptimConfig, batch_size: int = 128, seed: int = 0, loss: str = "ce") -> np.ndarray:
    """(N, C) out-of-fold probabilities of ``loss`` probes (the shared
    :func:`~noisyft.methods.linear_probe.fit_out_of_fold`, salted apart from cleanlab's so the two detectors draw
    independent probes)."""
    return oof_probes(feats, labels, num_classes, folds=folds, epochs=epochs, optim=optim, batch_size=batch_size,
                      seed=seed, loss=loss).probs


def oof_probes(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int, epochs: int, optim: OptimConfig,
               batch_size: int, seed: int, loss: str) -> FoldProbes:
    """:func:`oof_probs`'s probes themselves (their out-of-fold probabilities and the K heads)."""
    return fit_out_of_fold(feats, labels, num_classes, folds=folds, epochs=epochs, optim=optim, batch_size=batch_size,
                           seed=seed, salt_base=60, loss=loss)


@torch.no_grad()
def knn_probs(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, k: int = 20, temperature: float = 0.1,
              chunk: int = 2048) -> np.ndarray:
    """(N, C) label distribution of each sample's k nearest neighbours (cosine, itself excluded).

    Neighbours vote with weight exp(similarity / temperature); chunked so memory is O(chunk · N).
    """
    n = len(feats)
    k = max(1, min(k, n - 1))
    z = F.normalize(feats.float(), dim=1)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(z.device)
    out = torch.zeros(n, num_classes, dtype=torch.float64)
    for start in range(0, n, chunk):
        sim = z[start: start + chunk] @ z.T
        rows = torch.arange(sim.shape[0], device=z.device)
        sim[rows, rows + start] = -float("inf")  # never your own neighbour
        top, idx = sim.topk(k, dim=1)
        w = ((top - top[:, :1]) / temperature).exp()  # relative to the nearest: stable for any temperature
        votes = torch.zeros(sim.shape[0], num_classes, device=z.device, dtype=torch.float64)
        votes.scatter_add_(1, y[idx], w.double())
        out[start: start + chunk] = (votes / votes.sum(1, keepdim=True)).cpu()
    return out.numpy()


def given_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's probability of the given label."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.asarray(probs)[np.arange(len(labels)), labels]


def cotrain_scores(ctx, epochs: int | None = None, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, nn.Linear]:
    """UNICON-LP on the cached features: (1 − JSD score, averaged heads' class distribution, averaged head).

    ``epochs``: its epochs, warm-up included (None: the run's ``epochs_lp``); ``batch_size``: in place of the run's
    (UNICON-LP halves it for its two loaders). Logs its epochs as the run's
    ``lp`` phase (test/val accuracy of the averaged head).
    """
    import dataclasses

    from noisyft.methods.registry import METHODS
    from noisyft.methods.settings import resolve_settings

    # UNICON-LP with its own default settings, sharing the run's cached features and checkpoints
    cfg = dataclasses.replace(ctx.cfg, extra={}, epochs_lp=ctx.cfg.epochs_lp if epochs is None else epochs,
                              batch_size=batch_size or ctx.cfg.batch_size)
    unicon = dataclasses.replace(ctx, cfg=cfg, _settings=resolve_settings(cfg, ctx.train.classes, method="unicon-lp"))
    out = METHODS.get("unicon-lp")(unicon)
    head = out.model.head
    return np.asarray(out.clean_prob, dtype=np.float64), out.train_logits.softmax(1).double().numpy(), head


def issue_flags(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cleanlab's ``find_label_issues`` (prune by noise rate) on the ensemble's class distributions.

    Measured against a per-class GMM on the consensus score: the GMM on a rank score flags about half
    the samples whatever the noise rate (F1 0.34–0.58 at 20 % noise); this rule estimates the noise
    rate from the confident joint.
    """
    from cleanlab.filter import find_label_issues

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    return find_label_issues(np.asarray(labels, dtype=np.int64), p / p.sum(1, keepdims=True), n_jobs=1)


NOISE_RATES = ("confident_joint", "mpe")


def noise_transition(probs: np.ndarray, labels: np.ndarray, rates: np.ndarray | None = None) -> np.ndarray:
    """The estimated noise process T[k, j] = P(given label j | true class k), (C, C), rows sum to 1.

    From cleanlab's confident joint calibrated to the label counts (``estimate_joint``) on out-of-sample
    class distributions; a true class the joint gives no mass keeps its labels (identity row). ``rates``
    (C,): each given class's share of wrong labels in place of the joint's own (:func:`with_noise_rates`; the
    joint then says only where the wrong labels come from).
    """
    joint = calibrated_joint(labels, probs)  # [given j, true k]
    if rates is not None:
        joint = with_noise_rates(joint, rates)
    joint = joint.T  # [true k, given j]
    mass = joint.sum(1, keepdims=True)
    return np.where(mass > 0, joint / np.where(mass > 0, mass, 1.0), np.eye(len(joint)))


def mpe_noise_rates(probs: np.ndarray, labels: np.ndarray, min_mass: float = 0.3, levels: int = 50,
                    max_reference: int = 50_000) -> np.ndarray:
    """Per given class j, the share of its labels that are wrong, as a mixture-proportion estimate (C,), from
    out-of-sample class distributions (out-of-fold probes: the sample's own label never trained them).

    The samples given j mix clean ones with wrong ones that look like other classes. Their probability of
    class j is compared with a reference: the samples given another class k, weighted by the flow k → j that
    cleanlab's confident joint finds (the wrong labels' look-alikes). The rate is the least, over thresholds t
    at the reference's quantiles ``min_mass``…1, of share(given j with p_j ≤ t) / share(reference with p_j ≤ t):
    samples given j are counted as wrong only as far as the reference has as little p_j.

    Why: the confident joint counts a weak detector's own confident mistakes as label noise (64 px CIFAR-10,
    2,000 images: 0.16–0.18 on clean labels, 0.36 at sym-0.2), while a clean sample the probes get wrong still
    tends to keep more p_j than a true other-class sample. Measured (new_method_design.md §18): on CIFAR-10's
    out-of-fold probes it halves the confident joint's error (64 / 96 px: mean |error| 0.064 / 0.036 against
    0.137 / 0.092), but on Fashion-MNIST's strong probes it misses most of the structured noise (asym-block-0.4:
    0.06 where 0.41 is realised; inst-0.4: 0.22 for 0.40), and ``min_mass`` decides how much: no one value held
    on both. Not the default for that reason.

    Each class's reference is a fixed random ``max_reference`` of the other samples at most (a million images and a
    thousand classes: seconds).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    C = p.shape[1]
    joint = calibrated_joint(y, p)
    counts = np.maximum(np.bincount(y, minlength=C), 1)
    rates = np.zeros(C)
    for j in range(C):
        given, other = p[y == j, j], np.flatnonzero(y != j)
        if not len(given) or not len(other):
            continue
        if len(other) > max_reference:
            other = np.sort(np.random.default_rng(j).choice(other, max_reference, replace=False))
        flow = joint[j] / counts
        flow[j] = 0.0
        w = flow[y[other]] if flow.sum() > 0 else np.ones(len(other))
        ref, w = p[other, j], w / w.sum()
        order = np.argsort(ref, kind="stable")
        ref, mass = ref[order], np.cumsum(w[order])
        at = np.minimum(np.searchsorted(mass, np.linspace(min_mass, 1.0, levels)), len(ref) - 1)
        below = np.searchsorted(np.sort(given), ref[at], side="right") / len(given)
        rates[j] = min(1.0, float(np.min(below / mass[at])))
    return rates


def with_noise_rates(joint: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """``joint`` [given j, true k] with each given class's noise rate set to ``rates[j]``: its row keeps its mass and
    the shape of its off-diagonal (uniform where the joint had none)."""
    joint = np.asarray(joint, dtype=np.float64).copy()
    C = len(joint)
    for j in range(C):
        mass, off = joint[j].sum(), joint[j].copy()
        off[j] = 0.0
        off = off / off.sum() if off.sum() > 0 else np.where(np.arange(C) != j, 1.0 / max(C - 1, 1), 0.0)
        joint[j] = rates[j] * mass * off
        joint[j, j] = (1.0 - rates[j]) * mass
    return joint


def label_posterior(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """P(true class k | x, given label ỹ) ∝ p_k(x) · T[k, ỹ]: Bayes' rule with the detector's prediction as the
    prior and the estimated noise process as the likelihood of the given label, float32 (N, C).

    Why: a flagged sample's prediction is worth more than its label only where the noise process makes the
    label unlikely. At 20 % noise T's diagonal (~0.8) outweighs a probe's doubt, so hard clean samples keep
    their label; at 90 % noise T is nearly flat and the prediction decides. Measured on the 96 px grid's
    training truth (benchmarks/results/new_method_design.md §5): with the calibrated prediction the posterior's
    arg-max labels are 3.3 (sym-0.2), 5.4 (inst-0.2) and 5.3 (asym-0.4) points more accurate than relabelling
    cleanlab's flags.
    """
    labels = np.asarray(labels, dtype=np.int64)
    post = np.asarray(probs, dtype=np.float64) * np.asarray(transition, dtype=np.float64)[:, labels].T
    total = post.sum(1, keepdims=True)
    onehot = np.eye(post.shape[1])[labels]
    return np.where(total > 0, post / np.where(total > 0, total, 1.0), onehot).astype(np.float32)


def label_likelihood(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """Per sample, P(its given label | x) = Σ_k p_k(x) · T[k, ȳ] under a noise process T (float64, (N,))."""
    y = np.asarray(labels, dtype=np.int64)
    return (np.asarray(probs, dtype=np.float64) * np.asarray(transition, dtype=np.float64)[:, y].T).sum(1)


def temper(probs: np.ndarray, tau: float) -> np.ndarray:
    """``probs`` tempered: p^(1/τ), renormalised per row (float64)."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / tau
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray, max_rows: int = 100_000) -> float:
    """The τ under which the noise model best explains the given labels: the maximum of
    Σ_i log Σ_k p_ik(τ)·T[k, ȳ_i] over a grid of τ (on at most ``max_rows`` rows).

    Why: Bayes' rule weighs the prediction against T's diagonal, so it needs probabilities on T's scale; a
    detector's heads can be under- or over-confident. Fitting τ on the given labels needs no clean data.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.random.default_rng(0).permutation(len(labels))[:max_rows] if len(labels) > max_rows else slice(None)
    p, y, T = np.asarray(probs)[rows], labels[rows], np.asarray(transition, dtype=np.float64)
    taus = np.geomspace(0.1, 10.0, 41)
    Ty = T[:, y].T  # gathered once for the whole grid
    nll = [-np.log(np.clip((temper(p, t) * Ty).sum(1), 1e-300, None)).mean() for t in taus]
    return float(taus[int(np.argmin(nll))])


def calibrate(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray, max_rows: int = 100_000) -> np.ndarray:
    """``probs`` tempered with :func:`fit_temperature`'s τ (the prediction on the noise process's scale)."""
    return temper(probs, fit_temperature(probs, labels, transition, max_rows))


@dataclass(frozen=True)
class NoiseModel:
    """A detector's noise model, fitted on the training labels: the noise process T (C, C) and the temperature τ
    that puts the detector's class distributions on T's scale."""

    transition: np.ndarray
    tau: float

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        return temper(probs, self.tau)


def fit_noise_model(probs: np.ndarray, labels: np.ndarray, rates: np.ndarray | None = None) -> NoiseModel:
    """T from the confident joint of ``probs`` (:func:`noise_transition`, with the given class's noise ``rates`` when
    given), τ by :func:`fit_temperature`."""
    T = noise_transition(probs, labels, rates)
    return NoiseModel(T, fit_temperature(probs, labels, T))


def symmetric_noise_model(calibrated: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> NoiseModel:
    """Symmetric noise at ``transition``'s own rate: every class keeps the label-weighted mean of its diagonal and
    spreads the rest evenly over the other classes; τ refitted on ``calibrated`` (a prediction already on
    ``transition``'s scale, so τ is relative to that).

    Why: the confident joint reads a weak model's confusions (cat↔dog) as noise, so under symmetric noise its T
    makes a flip between confusable classes look likely and one between unrelated classes unlikely, and ranks
    wrong labels by the model's confusion (new_method_design.md §21).
    """
    labels, c = np.asarray(labels, dtype=np.int64), len(transition)
    keep = np.bincount(labels, minlength=c) @ np.diag(transition) / max(len(labels), 1)
    T = np.where(np.eye(c, dtype=bool), keep, (1 - keep) / max(c - 1, 1))
    return NoiseModel(T, fit_temperature(calibrated, labels, T))


def symmetric_z(val_calibrated: np.ndarray, val_labels: np.ndarray, transition: np.ndarray, sym: NoiseModel) -> float:
    """How clearly (paired standard errors of the per-sample log-likelihood) the symmetric noise model ``sym``
    predicts held-out noisy labels better than the full ``transition`` (negative: the full one predicts them better);
    ``val_calibrated``: their prediction on ``transition``'s scale."""
    full = heldout_loglik(val_calibrated, val_labels, 1.0, transition)
    return paired_z(heldout_loglik(val_calibrated, val_labels, sym.tau, sym.transition) - full)


def noise_model(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the prediction calibrated to the noise process, T): what :func:`label_posterior` needs."""
    m = fit_noise_model(probs, labels)
    return m.calibrated(probs), m.transition


def expected_f1_flags(q: np.ndarray) -> np.ndarray:
    """The ``m`` samples most probably mislabelled (``q``: each one's probability that its given label is wrong),
    ``m`` maximising the F1 that ``q`` itself expects, 2 · Σ_{top m} q / (m + Σ q); nothing when ``q`` is all 0.

    No truth needed: it flags about the expected number of wrong labels, the most probable first, and is as good
    as ``q``'s calibration. Why not "the arg-max is another class": a label the posterior gives 0.3 while no
    other class reaches 0.3 is probably wrong but kept by that rule, which under-flagged where the noise is
    structured (benchmarks/results/new_method_design.md §11: F1 +3 to +8 points at asym-0.4 / inst-0.4).
    """
    q = np.asarray(q, dtype=np.float64)
    flags = np.zeros(len(q), bool)
    if not len(q) or q.sum() <= 0:
        return flags
    order = np.argsort(-q, kind="stable")
    expected = 2 * np.cumsum(q[order]) / (np.arange(1, len(q) + 1) + q.sum())
    flags[order[: int(np.argmax(expected)) + 1]] = True
    return flags


def posterior_issues(post: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """is_label_issue from a label posterior (N, C): :func:`expected_f1_flags` of P(given label wrong) = 1 − post[given]."""
    labels = np.asarray(labels, dtype=np.int64)
    return expected_f1_flags(1.0 - np.asarray(post, dtype=np.float64)[np.arange(len(labels)), labels])


def bayes_issues(probs: np.ndarray, labels: np.ndarray,
                 noise: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label posterior, is_label_issue): the posterior given the sample and the estimated noise process, and
    :func:`posterior_issues` of it. ``noise``: the :func:`noise_model` of ``probs`` when already computed."""
    calibrated, T = noise if noise is not None else noise_model(probs, labels)
    post = label_posterior(calibrated, labels, T)
    return post, posterior_issues(post, labels)


def heldout_loglik(val_probs: np.ndarray, val_labels: np.ndarray, tau: float, transition: np.ndarray) -> np.ndarray:
    """Per held-out sample, log P(its given label | x) under a noise model: log Σ_k p_k(x; τ) · T[k, ȳ]."""
    return np.log(np.clip(label_likelihood(temper(val_probs, tau), val_labels, transition), 1e-300, None))


def mixture_weight(first: np.ndarray, second: np.ndarray, val_labels: np.ndarray, transition: np.ndarray,
                   default: float = 0.5, z_min: float = 2.0, steps: int = 20) -> tuple[float, float]:
    """(share, z): the share a ∈ {0, 1/steps, …, 1} of ``second`` in the mixture (1 − a)·first + a·second of two class
    distributions of held-out samples (M, C) under which their given labels are likeliest through the noise process
    T (the arg-max of Σ_i log Σ_k ((1 − a)·first + a·second)_ik · T[k, ȳ_i]), when it beats the ``default`` share by
    at least ``z_min`` paired standard errors (z) of the per-sample log-likelihood; else ``default``.

    Why: ``consensus`` mixes the detector's prediction with the fine-tuned model's; which of the two predicts the
    true class better changes with the data and with every epoch (new_method_design.md §4: the fine-tuned model
    outgrows a 70 %-accurate probe at 96 px, not at 64 px, and after its first epoch from a fresh head it is far
    worse than the detector). Held-out noisy labels judge them without clean data; the margin keeps the default
    where they cannot tell (at 90 % noise T is nearly flat and the likelihood mostly scores calibration, §19).
    Measured no better than the fixed share (§19): the targets mix the model's in-sample temporal ensemble, which
    the split does not judge.
    """
    like = np.stack([label_likelihood(p, val_labels, transition) for p in (first, second)])  # (2, M)
    shares = np.append(np.linspace(0.0, 1.0, steps + 1), default)
    ll = np.log(np.clip(np.outer(1 - shares, like[0]) + np.outer(shares, like[1]), 1e-300, None))  # (S + 1, M)
    best = int(np.argmax(ll[:-1].sum(1)))
    z = paired_z(ll[best] - ll[-1])
    return (float(shares[best]) if z >= z_min else float(default)), z


def choose_noise_model(models: dict, val_probs: dict, val_labels: np.ndarray, default: str,
                       z_min: float = 2.0) -> tuple[str, dict]:
    """Which detector's noise model the verdict uses: ``default`` unless another predicts the noisy labels of
    held-out samples (the validation split, which no detector trained on) better by at least ``z_min`` paired
    standard errors of the mean log-likelihood difference. Returns (name, {name: z}).

    ``models``: name → :class:`NoiseModel` (fitted on the training labels); ``val_probs``: name → that detector's
    class distributions of the held-out samples (M, C).

    Why: a detector that has seen a sample's label (the co-trained heads) partly fits it, so its noise model
    under-states heavy noise (64 px sym-0.9: ~60 % where 81 % are wrong); out-of-fold probes over-state light
    noise (their confident mistakes count as noise). Held-out labels judge both on equal terms, and the margin
    keeps the default unless the evidence is clear (new_method_design.md §12).
    """
    ll = {name: heldout_loglik(val_probs[name], val_labels, m.tau, m.transition) for name, m in models.items()}
    z = {name: paired_z(values - ll[default]) for name, values in ll.items() if name != default}
    best = max(z, key=z.get, default=None)
    return (best if best is not None and z[best] >= z_min else default), z


def paired_z(diff: np.ndarray) -> float:
    """The mean of per-sample differences in standard errors (0 when they do not vary): how clearly one model beats
    another on the same held-out samples."""
    d = np.asarray(diff, dtype=np.float64)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return float(d.mean() / se) if se > 0 else 0.0


def clean_posterior(score: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class two-component GMM on ``1 − score``: the posterior of the low (clean) component."""
    return fit_per_class_gmm(1.0 - np.asarray(score, dtype=np.float64), labels, num_classes).clean_prob


def detect(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, components: Sequence[str], folds: int,
           epochs: int, optim: OptimConfig, batch_size: int, seed: int, k: int, knn_temperature: float,
           oof_loss: str = "ce", val_feats: torch.Tensor | None = None) -> DetectorScores:
    """The pure components (``oof``, ``knn``) on cached features; ``cotrain`` is :func:`cotrain_scores`.
    ``val_feats``: held-out samples the probes also predict (their mean, in ``val_probs``)."""
    out = DetectorScores()
    if "oof" in components:
        probes = oof_probes(feats, labels, num_classes, folds=folds, epochs=epochs, optim=optim, batch_size=batch_size,
                            seed=seed, loss=oof_loss)
        out.probs["oof"], out.scores["oof"] = probes.probs, given_prob(probes.probs, labels)
        if val_feats is not None:
            out.val_probs["oof"] = probes.predict(val_feats)
    if "knn" in components:
        p = knn_probs(feats, labels, num_classes, k=k, temperature=knn_temperature)
        out.probs["knn"], out.scores["knn"] = p, given_prob(p, labels)
    return out
