"""UNICON (Karim et al. 2022) as linear probing, as the TURN paper runs it.

Two linear heads are warmed up with CE. After warm-up, before each head's
epoch: the Jensen–Shannon divergence between the two heads' mean prediction and
the one-hot given label scores every sample (low = agrees with its label). The
threshold is the mean JSD, lowered to thr − (thr − min)/τ_f (τ_f = 5) when it
exceeds d_u = 0.7; the selection ratio SR is the fraction of samples below it
(as in the published code: SR is data-driven, not a fixed number; ``--extra sr``
fixes it instead). *Uniform selection*: the ``int(SR·N/C)`` lowest-JSD samples
of every class are labelled (a class with fewer takes all it has), which keeps
the labelled set class-balanced; everything else is unlabelled. Labelled
samples get the clean weight w = 1 − JSD, with w = 1 when JSD < 0.5 (the
published weight adjustment). Training is MixMatch on the strong views plus an
unsupervised contrastive term on two strong views of the unlabelled samples.

JSD uses log base 2, so it lies in [0, 1] as the paper states and the 0.7 rule
and w = 1 − JSD are on that scale.

LP specifics: the contrastive term needs a trainable representation; with a
frozen backbone the only one is the head, so it is applied to the L2-normalised
head outputs (a separate projection head would receive gradients but could not
change the classifier). ``unicon-lp`` uses feature-space augmentation (Gaussian
noise × per-dimension std, then dropout; strong = stronger noise and dropout)
for the two weak and two strong views and mixes feature vectors;
``unicon-lp-img`` uses the run's image augmentation (weak) and AutoAugment on
top (strong) through the frozen backbone.

Settings (``--extra``, :class:`UniconSettings`): ``warmup`` (5), ``sr`` (None: from the threshold),
``d_u`` (0.7), ``jsd_tau`` (5), ``lambda_u`` (30), ``lambda_c`` (0.025),
``contrast_T`` (0.05), ``rampup`` (16), ``sharpen_T`` (0.5), ``mix_alpha`` (4),
``feat_noise``/``feat_dropout`` (0.1/0.1), ``feat_noise_strong``/
``feat_dropout_strong`` (0.2/0.3). The report's clean probability is 1 − JSD of
the final heads and a label issue is a sample UNICON's own selection (the uniform
selection above, run on the final heads) would leave unlabelled.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisyft.methods.base import Context, MethodOutput
from noisyft.methods.mixmatch import (FeatureAugmentOptions, MixMatchOptions, MixSettings, Split, feature_logits,
                                      register_two_head, two_head_output, two_head_training)
from noisyft.options import NON_NEGATIVE, POSITIVE, Range, option
from noisyft.selection import selection_metrics

log = logging.getLogger("noisyft")


@dataclass(frozen=True)
class UniconSettings(MixMatchOptions):
    """unicon-lp-img's settings (unicon-lp adds the feature-space augmentation strengths)."""

    sr: Optional[float] = option(None, "fixed selection ratio SR (null: data-driven, from the JSD threshold)",
                                 range=Range(0, 1, low_open=True))
    d_u: float = option(0.7, "JSD threshold above which the threshold is lowered (very noisy data)",
                        range=Range(0, 1, low_open=True))
    jsd_tau: float = option(5.0, "τ_f of the lowered threshold thr − (thr − min)/τ_f", range=Range(1, None))
    lambda_u: float = option(30.0, "weight of the unlabelled loss", range=NON_NEGATIVE)
    lambda_c: float = option(0.025, "weight of the contrastive loss", range=NON_NEGATIVE)
    contrast_T: float = option(0.05, "temperature of the contrastive loss", range=POSITIVE)


@dataclass(frozen=True)
class UniconFeatureSettings(FeatureAugmentOptions, UniconSettings):
    """unicon-lp's settings."""

    feat_noise_strong: float = option(0.2, "strong view: Gaussian noise × each feature dimension's std",
                                      range=NON_NEGATIVE)
    feat_dropout_strong: float = option(0.3, "strong view: dropout rate on the feature vector",
                                        range=Range(0, 1, high_open=True))


def jsd_to_label(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen–Shannon divergence (base 2, in [0, 1]) between ``probs`` and the one-hot ``labels``."""
    onehot = F.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    m = (probs + onehot) / 2

    def kl(p, q):
        return (p * ((p + 1e-10) / (q + 1e-10)).log2()).sum(1)

    return 0.5 * kl(probs, m) + 0.5 * kl(onehot, m)


def jsd_threshold(jsd: np.ndarray, d_u: float = 0.7, tau: float = 5.0) -> float:
    """Mean JSD, lowered to thr − (thr − min)/τ when it exceeds ``d_u`` (very noisy data: be stricter)."""
    jsd = np.asarray(jsd, dtype=np.float64)
    thr = float(jsd.mean())
    if thr > d_u:
        thr = thr - (thr - float(jsd.min())) / tau
    return thr


def uniform_selection(jsd: np.ndarray, labels: np.ndarray, num_classes: int, sr: float) -> np.ndarray:
    """Sorted indices of the ``int(sr·N/C)`` lowest-JSD samples of every class (all of a smaller class).

    Ties are broken by sample index, so the result is deterministic; one sort serves every class.
    """
    jsd, labels = np.asarray(jsd, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    per_class = int(sr * len(labels) / num_classes)
    order = np.lexsort((np.arange(len(labels)), jsd, labels))  # by class, then JSD, then index
    starts = np.concatenate(([0], np.cumsum(np.bincount(labels, minlength=num_classes))[:-1]))
    rank = np.arange(len(labels)) - starts[labels[order]]
    return np.sort(order[rank < per_class])


def clean_weight(jsd: np.ndarray) -> np.ndarray:
    """UNICON's labelled weight: 1 − JSD, and 1 when JSD < 0.5."""
    jsd = np.asarray(jsd, dtype=np.float64)
    return 1.0 - np.where(jsd < 0.5, 0.0, jsd)


def unicon_split(jsd: np.ndarray, labels: np.ndarray, num_classes: int, *, sr: Optional[float] = None,
                 d_u: float = 0.7, tau: float = 5.0) -> tuple[Split, float, float]:
    """(split, SR, threshold): uniform selection with SR from the JSD threshold unless ``sr`` is given."""
    thr = jsd_threshold(jsd, d_u, tau)
    ratio = float(np.mean(np.asarray(jsd) < thr)) if sr is None else float(sr)
    labelled = uniform_selection(jsd, labels, num_classes, ratio)
    mask = np.zeros(len(labels), dtype=bool)
    mask[labelled] = True
    return Split(labelled, clean_weight(np.asarray(jsd)[labelled]), np.flatnonzero(~mask)), ratio, thr


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """SimCLR's contrastive loss over 2B views: each view's positive is the other view of its sample."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    pos = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # made on the device: a host copy would wait for it
    return F.cross_entropy(sim, pos)


def mean_jsd(heads, feats: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """JSD of the two heads' mean prediction (eval mode, cached features) against the given labels."""
    probs = (feature_logits(heads[0], feats).softmax(1) + feature_logits(heads[1], feats).softmax(1)) / 2
    return jsd_to_label(probs, torch.as_tensor(labels)).numpy()


def _split_fn(ctx: Context, sr: Optional[float], d_u: float, tau: float):
    def split(epoch: int, k: int, heads, feats: torch.Tensor) -> Split:
        labels = ctx.train.labels
        jsd = mean_jsd(heads, feats, labels)
        s, ratio, thr = unicon_split(jsd, labels, ctx.num_classes, sr=sr, d_u=d_u, tau=tau)
        stats = {"head": k, "sr": ratio, "jsd_threshold": thr, "below_threshold": int((jsd < thr).sum()),
                 "n_unlabelled": int(len(s.unlabelled))}
        if ctx.train.true_labels is not None:
            m = selection_metrics(jsd < thr, labels, ctx.train.true_labels)
            stats.update(threshold_precision=m["precision"], threshold_recall=m["recall"])
        if len(s.labelled) == 0:
            log.warning("unicon epoch %d head %d: empty labelled set (SR %.3f); the head skips this epoch", epoch, k, ratio)
        ctx.log_selection(epoch, s.labelled, **stats)
        return s

    return split


def _unicon(ctx: Context, image_mode: bool) -> MethodOutput:
    """UNICON on cached features or (``image_mode``) on augmented images through the frozen backbone."""
    e = ctx.settings
    lambda_c, temp = e.lambda_c, e.contrast_T

    def contrastive(head: nn.Linear, u3: torch.Tensor, u4: torch.Tensor) -> torch.Tensor:
        return lambda_c * nt_xent(head(u3), head(u4), temp)

    settings = MixSettings(T=e.sharpen_T, alpha=e.mix_alpha, lambda_u=e.lambda_u, rampup=e.rampup, warmup=e.warmup,
                           strong_mix=True, extra_loss=contrastive)
    split_fn = _split_fn(ctx, e.sr, e.d_u, e.jsd_tau)
    heads = two_head_training(ctx, "unicon-img" if image_mode else "unicon", split_fn, settings, image_mode)
    feats = ctx.feature_tensor("train")
    with ctx.run.phase("selection"):
        jsd = mean_jsd(heads, feats, ctx.train.labels)
        final, _, _ = unicon_split(jsd, ctx.train.labels, ctx.num_classes, sr=e.sr, d_u=e.d_u, tau=e.jsd_tau)
    is_issue = np.ones(len(jsd), dtype=bool)
    is_issue[final.labelled] = False
    return two_head_output(ctx, heads, 1.0 - jsd, is_issue=is_issue)


UNICON_LABEL_QUALITY = ("label_quality: 1 − JSD (base 2) between the two final heads' mean prediction and the given "
                        "label; is_label_issue: left out of UNICON's uniform selection on the final heads (per class, "
                        "the int(SR·N/C) lowest-JSD samples are clean; SR = share below the mean-JSD threshold)")


register_two_head("unicon-lp", _unicon, doc="UNICON as LP: JSD uniform selection, MixMatch + contrastive on",
                  label_quality=UNICON_LABEL_QUALITY, settings=(UniconFeatureSettings, UniconSettings))
