"""DivideMix (Li et al. 2020) as linear probing, as the TURN paper runs it.

Two linear heads on the frozen backbone are warmed up with CE on every sample.
After warm-up, each epoch and for each head: CE losses of all training samples
(eval mode, cached features), min-max normalised over the whole set, one
two-component GMM (max_iter 10, tol 1e-2, reg_covar 5e-4); a sample's clean
probability is the posterior of the low-mean component and it is *labelled*
when that exceeds ``p_threshold``. Co-divide: each head trains on the split the
*other* head made, so the two do not confirm their own mistakes. Training is
MixMatch (see :mod:`noisyft.methods.mixmatch`): labelled targets refined with
the clean probability, unlabelled targets guessed by both heads.

Two flavours: ``dividemix-lp`` trains on cached features with feature-space
augmentation (Gaussian noise × per-dimension std, then dropout) standing in for
image augmentation, and mixes feature vectors; ``dividemix-lp-img`` feeds real
augmented images through the frozen backbone every step (faithful, slow).

Settings (``--extra``, :class:`DivideMixSettings`): ``warmup`` (5 of the
``epochs_lp`` epochs; the paper uses 10/30 of 300 for CIFAR-10/100 from scratch,
a pretrained backbone's linear head needs far fewer), ``p_threshold`` (0.5; 0.6
when the injected noise rate ≥ 0.9), ``lambda_u`` (150 when the injected noise
rate ≥ 0.5, else 25: the CIFAR-100 values), ``rampup`` (16 epochs, DivideMix's
constant), ``sharpen_T`` (0.5), ``mix_alpha`` (4), and the feature-mode
augmentation strengths ``feat_noise`` (0.1) and ``feat_dropout`` (0.1). The batch is half of ``batch_size`` (the TURN
paper halves it for the two loaders). The report's clean probability is the
mean of the two heads' final GMM posteriors and a label issue is what
DivideMix's own rule would leave unlabelled: that mean ≤ ``p_threshold``; the
model is the averaged head (its argmax equals the summed-logit ensemble both
papers test with).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from noisyft.losses import per_sample_ce
from noisyft.methods.base import Context, MethodOutput
from noisyft.methods.mixmatch import (FeatureAugmentOptions, MixMatchOptions, MixSettings, Split, feature_logits,
                                      register_two_head, two_head_output, two_head_training)
from noisyft.options import NON_NEGATIVE, UNIT_OPEN, option
from noisyft.selection import fit_per_class_gmm

log = logging.getLogger("noisyft")


@dataclass(frozen=True)
class DivideMixSettings(MixMatchOptions):
    """dividemix-lp-img's settings (dividemix-lp adds the feature-space augmentation strengths)."""

    lambda_u: float = option(25.0, "weight of the unlabelled loss (150 when the injected noise rate is >= 0.5)",
                             range=NON_NEGATIVE)
    p_threshold: float = option(0.5, "clean-probability threshold of the co-divide (0.6 when the injected noise rate "
                                "is >= 0.9)", range=UNIT_OPEN)


@dataclass(frozen=True)
class DivideMixFeatureSettings(FeatureAugmentOptions, DivideMixSettings):
    """dividemix-lp's settings."""


def gmm_clean_prob(losses: np.ndarray) -> np.ndarray:
    """DivideMix's clean probability: one 2-component GMM on all losses, min-max normalised globally.

    The per-class fitter run on a single "class" is exactly that fit (same EM, same edge cases:
    constant losses give 1.0, non-finite losses 0.0).
    """
    losses = np.asarray(losses, dtype=np.float64)
    return fit_per_class_gmm(losses, np.zeros(len(losses), dtype=np.int64), 1, normalize="global").clean_prob


def is_clean(prob: np.ndarray, p_threshold: float) -> np.ndarray:
    """DivideMix's clean rule: clean probability above ``p_threshold`` (the rest is unlabelled / a label issue)."""
    return np.asarray(prob) > p_threshold


def divide(prob: np.ndarray, p_threshold: float) -> Split:
    """Labelled = clean probability above ``p_threshold`` (weighted by it); the rest is unlabelled."""
    clean = is_clean(prob, p_threshold)
    return Split(np.flatnonzero(clean), np.asarray(prob)[clean], np.flatnonzero(~clean))


def co_divide(prob1: np.ndarray, prob2: np.ndarray, p_threshold: float) -> tuple[Split, Split]:
    """(split for head 1, split for head 2): each head trains on the division made by the other."""
    return divide(prob2, p_threshold), divide(prob1, p_threshold)


def settings_for(ctx: Context) -> tuple[MixSettings, float]:
    """MixMatch settings and p_threshold (the noise-rate defaults come from ``dataset_defaults``)."""
    e = ctx.settings
    s = MixSettings(T=e.sharpen_T, alpha=e.mix_alpha, lambda_u=e.lambda_u, rampup=e.rampup, warmup=e.warmup)
    return s, e.p_threshold


def head_clean_probs(ctx: Context, heads, feats: torch.Tensor) -> list[np.ndarray]:
    """Each head's GMM clean probability from its CE losses on the cached training features."""
    labels = torch.as_tensor(ctx.train.labels)
    return [gmm_clean_prob(per_sample_ce(feature_logits(h, feats), labels).numpy()) for h in heads]


def _split_fn(ctx: Context, p_threshold: float):
    cache: dict = {}

    def split(epoch: int, k: int, heads, feats: torch.Tensor) -> Split:
        if k == 1:  # both heads are scored before either trains this epoch
            cache["splits"] = co_divide(*head_clean_probs(ctx, heads, feats), p_threshold)
        s = cache["splits"][k - 1]
        if len(s.labelled) == 0:
            log.warning("dividemix epoch %d head %d: no sample above p_threshold %.2f; the head skips this epoch",
                        epoch, k, p_threshold)
        ctx.log_selection(epoch, s.labelled, head=k, p_threshold=p_threshold, n_unlabelled=int(len(s.unlabelled)))
        return s

    return split


def _dividemix(ctx: Context, image_mode: bool) -> MethodOutput:
    """DivideMix on cached features or (``image_mode``) on augmented images through the frozen backbone."""
    settings, p_threshold = settings_for(ctx)
    tag = "dividemix-img" if image_mode else "dividemix"
    heads = two_head_training(ctx, tag, _split_fn(ctx, p_threshold), settings, image_mode)
    feats = ctx.feature_tensor("train")
    with ctx.run.phase("selection"):
        clean_prob = np.mean(head_clean_probs(ctx, heads, feats), axis=0)
    return two_head_output(ctx, heads, clean_prob, is_issue=~is_clean(clean_prob, p_threshold))


DIVIDEMIX_LABEL_QUALITY = ("label_quality: mean of the two heads' clean posteriors, each from one global 2-component "
                           "GMM on that head's CE losses; is_label_issue: label_quality ≤ p_threshold (0.5; 0.6 at "
                           "noise ≥ 0.9), DivideMix's rule for leaving a sample unlabelled")


register_two_head("dividemix-lp", _dividemix, doc="DivideMix as LP: two heads, GMM co-divide, MixMatch on",
                  label_quality=DIVIDEMIX_LABEL_QUALITY, settings=(DivideMixFeatureSettings, DivideMixSettings))
