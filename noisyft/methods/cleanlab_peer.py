"""cleanlab (confident learning, Northcutt et al. 2021) as a peer detector and trainer.

Confident learning needs *out-of-sample* predicted probabilities: a model must
never score a sample it was trained on, or it simply agrees with the noisy
label. So the training set is split into ``folds`` (``--extra folds``, 5) stratified folds
(seeded); for each fold a fresh linear head is trained with CE on the cached
features of the other folds for ``epochs_lp`` epochs and predicts the held-out
fold. ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (its default
``prune_by_noise_rate``) flags the issues; the rest is the kept set, logged as
the selection.

``cleanlab``: detection plus an LP head trained with CE on the kept samples
(``epochs_lp`` epochs). ``cleanlab-fft``: the whole model (fresh head, as
``ce-fft``) fine-tuned with CE on the kept samples for ``--epochs-fft`` epochs
(the baseline budget, 5, by default). In both, the report's clean probability is
cleanlab's ``get_label_quality_scores`` (self-confidence: the out-of-fold
probability of the given label) and ``is_label_issue`` is ``find_label_issues``'
own verdict (the rule training used).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from noisyft.engine import generator, head_logits, train_head_epoch
from noisyft.losses import create_loss
from noisyft.methods import linear_probe as probes
from noisyft.methods.base import Context, MethodOutput, label_quality_doc
from noisyft.methods.baselines import BASELINE_FFT_EPOCHS
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings
from noisyft.options import Range, option


@dataclass(frozen=True)
class CleanlabSettings(MethodSettings):
    """cleanlab's settings."""

    folds: int = option(5, "stratified folds for the out-of-fold probabilities (capped by the largest class's size)",
                        range=Range(2, None))


@dataclass(frozen=True)
class CleanlabFFTSettings(CleanlabSettings):
    """cleanlab-fft's settings."""

    EPOCHS_FFT = BASELINE_FFT_EPOCHS


def fit_head(ctx: Context, feats: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, epochs: int, salt: int,
             log_phase: str | None = None) -> nn.Linear:
    """A fresh CE linear head trained on ``indices`` of the cached features (logging test accuracy if ``log_phase``).

    A logged head is checkpointed every epoch (tag ``lp``) and resumes from its last one; the
    unlogged out-of-fold heads are recomputed (deterministic, and quick on cached features).
    """
    torch.manual_seed(generator(ctx.cfg.seed, 40, salt).initial_seed())
    head = nn.Linear(feats.shape[1], ctx.num_classes).to(ctx.device)
    opt = ctx.lp_optim.build(head.parameters())
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(feats.device)
    start = ctx.resume("lp", head=head, opt=opt) if log_phase else 0
    for epoch in range(start + 1, epochs + 1):
        with ctx.run.phase(log_phase) if log_phase else nullcontext():  # out-of-fold heads are timed by the caller
            loss = train_head_epoch(head, feats[idx], labels[idx], create_loss("ce"), opt, batch_size=ctx.cfg.batch_size,
                                    gen=generator(ctx.cfg.seed, 41, salt, epoch), epoch=epoch)
        if log_phase:
            ctx.log_epoch(log_phase, epoch, head=head, train_loss=loss, n_train=int(len(idx)))
            ctx.checkpoint("lp", epoch, head=head, opt=opt)
    return head


def out_of_fold_probs(ctx: Context, feats: torch.Tensor, folds: int) -> np.ndarray:
    """(N, C) predicted probabilities, each row from a CE probe that never saw that sample."""
    c = ctx.cfg
    return probes.out_of_fold_probs(feats, ctx.train.labels, ctx.num_classes, folds=folds, epochs=c.epochs_lp,
                                    optim=ctx.lp_optim, batch_size=c.batch_size, seed=c.seed, salt_base=40)


def find_issues(ctx: Context, feats: torch.Tensor, folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept indices, label-quality score per sample, the out-of-fold LP probabilities) from cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with ctx.run.phase("selection"):
        probs = out_of_fold_probs(ctx, feats, folds)
        issues = find_label_issues(ctx.train.labels, probs, n_jobs=1)
        quality = get_label_quality_scores(ctx.train.labels, probs)
    kept = np.flatnonzero(~issues)
    return kept, quality, probs


def _prepare(ctx: Context, log: bool) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    feats = ctx.feature_tensor("train")
    kept, quality, probs = find_issues(ctx, feats, ctx.settings.folds)
    if log:
        ctx.log_selection(1, kept, n_issues=int(len(ctx.train) - len(kept)))
    return feats, kept, quality, probs


def _flags(ctx: Context, kept: np.ndarray) -> np.ndarray:
    """cleanlab's own verdict: every sample find_label_issues did not keep."""
    flags = np.ones(len(ctx.train), dtype=bool)
    flags[kept] = False
    return flags


CLEANLAB_LABEL_QUALITY = ("label_quality: cleanlab's get_label_quality_scores, self-confidence (the out-of-fold "
                          "linear probes' probability of the given label); is_label_issue: cleanlab.filter."
                          "find_label_issues' verdict (prune_by_noise_rate), the samples training leaves out")


@METHODS.register("cleanlab", settings=CleanlabSettings)
@label_quality_doc(CLEANLAB_LABEL_QUALITY)
def cleanlab_lp(ctx: Context) -> MethodOutput:
    """cleanlab find_label_issues on out-of-fold LP probabilities; an LP head on the kept samples."""
    resumed = bool(ctx.resume_state) and ctx.resume_state["tag"] == "lp"  # its selection record is in the checkpoint
    feats, kept, quality, probs = _prepare(ctx, log=not resumed)
    labels = torch.as_tensor(ctx.train.labels).to(ctx.device)
    head = fit_head(ctx, feats, labels, kept, ctx.cfg.epochs_lp, salt=99, log_phase="lp")
    logits = head_logits(head, ctx.features("train"), ctx.device)
    return MethodOutput(model=ctx.classifier(head), train_logits=logits, clean_prob=quality, is_issue=_flags(ctx, kept),
                        pred_probs=probs)


@METHODS.register("cleanlab-fft", settings=CleanlabFFTSettings)
@label_quality_doc(CLEANLAB_LABEL_QUALITY)
def cleanlab_fft(ctx: Context) -> MethodOutput:
    """cleanlab find_label_issues on out-of-fold LP probabilities; full fine-tuning with CE on the kept samples."""
    model, opt = ctx.fresh_model()
    start = ctx.resume("fft", model=model, opt=opt)
    _, kept, quality, probs = _prepare(ctx, log=start == 0)  # deterministic: a resumed run recomputes the same set
    epochs = ctx.epochs_fft
    for epoch in range(start + 1, epochs + 1):
        ctx.fine_tune_epoch(model, kept, create_loss("ce"), opt, epoch, epochs)
    with ctx.run.phase("selection"):
        logits = ctx.image_logits(model, "train", desc="losses:train")
    return MethodOutput(model=model, train_logits=logits, clean_prob=quality, is_issue=_flags(ctx, kept),
                        pred_probs=probs)
