"""Small-loss selection: train only on the lowest-loss fraction of each class.

The classic co-teaching-style baseline without the second network: after a CE
warm-up on every sample, each epoch starts by scoring every training sample
with the current model (CE, eval mode, no augmentation) and keeps the
``keep_fraction`` (``--extra keep_fraction``, 0.5) lowest-loss samples *of each
class* (per class so a hard class is not dropped wholesale); that epoch trains
with CE on the kept samples only.

``small-loss-lp``: a linear head on cached features, ``epochs_lp`` epochs of
which ``warmup`` (5) are warm-up. ``small-loss-fft``: the whole model
(fresh head, like ``ce-fft``) for ``--epochs-fft`` epochs (the baseline
budget, 5, by default) of which ``warmup_fft`` (1) are
warm-up; each later epoch costs one extra eval pass over the training images.
Selection is a hard mask, not a score, so the label-issue report falls back to
the per-class GMM on the final losses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from noisyft import dist
from noisyft.engine import generator, head_logits, train_head_epoch
from noisyft.losses import create_loss, per_sample_ce
from noisyft.methods.base import GMM_LABEL_QUALITY, Context, MethodOutput, label_quality_doc
from noisyft.methods.baselines import BASELINE_FFT_EPOCHS
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings
from noisyft.options import NON_NEGATIVE, Range, option
from noisyft.selection import small_loss_selection


KEEP = Range(0, 1, low_open=True)


@dataclass(frozen=True)
class SmallLossSettings(MethodSettings):
    """small-loss-lp's settings."""

    keep_fraction: float = option(0.5, "share of each class's lowest-loss samples trained on after warm-up", range=KEEP)
    warmup: int = option(5, "CE warm-up epochs on every sample (of the epochs_lp epochs)", range=NON_NEGATIVE)


@dataclass(frozen=True)
class SmallLossFFTSettings(MethodSettings):
    """small-loss-fft's settings."""

    EPOCHS_FFT = BASELINE_FFT_EPOCHS
    keep_fraction: float = option(0.5, "share of each class's lowest-loss samples trained on after warm-up", range=KEEP)
    warmup_fft: int = option(1, "CE warm-up epochs on every sample (of the fine-tuning epochs)", range=NON_NEGATIVE)


def keep_small_loss(ctx: Context, logits: torch.Tensor, epoch: int) -> np.ndarray:
    """Indices of the lowest-loss ``keep_fraction`` of each class under ``logits``; logs the selection."""
    return keep_lowest(ctx, per_sample_ce(logits, torch.as_tensor(ctx.train.labels)).numpy(), epoch)


def keep_lowest(ctx: Context, losses: np.ndarray, epoch: int) -> np.ndarray:
    """Indices of the lowest-``losses`` ``keep_fraction`` of each class; logs the selection."""
    keep_fraction = ctx.settings.keep_fraction
    chosen = np.flatnonzero(small_loss_selection(losses, ctx.train.labels, ctx.num_classes, keep_fraction))
    ctx.log_selection(epoch, chosen, keep_fraction=keep_fraction)
    return chosen


@METHODS.register("small-loss-lp", settings=SmallLossSettings)
@label_quality_doc(GMM_LABEL_QUALITY)
def small_loss_lp(ctx: Context) -> MethodOutput:
    """Small-loss LP: CE warm-up, then per-epoch per-class lowest-loss selection on cached features."""
    cfg = ctx.cfg
    feats_np = ctx.features("train")
    feats = ctx.feature_tensor("train")
    labels = torch.as_tensor(ctx.train.labels).to(ctx.device)
    torch.manual_seed(generator(cfg.seed, 1).initial_seed())
    head = nn.Linear(feats.shape[1], ctx.num_classes).to(ctx.device)
    opt = ctx.lp_optim.build(head.parameters())
    loss_fn = create_loss("ce")
    warmup = ctx.settings.warmup
    start = ctx.resume("small-loss", head=head, opt=opt)
    for epoch in range(start + 1, cfg.epochs_lp + 1):
        chosen = np.arange(len(feats))
        if epoch > warmup:
            with ctx.run.phase("selection"):
                chosen = keep_small_loss(ctx, head_logits(head, feats_np, ctx.device), epoch)
        idx = torch.as_tensor(chosen).to(ctx.device)
        with ctx.run.phase("lp"):
            loss = train_head_epoch(head, feats[idx], labels[idx], loss_fn, opt, batch_size=cfg.batch_size,
                                    gen=generator(cfg.seed, 2, epoch), epoch=epoch)
        ctx.log_epoch("lp", epoch, head=head, train_loss=loss, n_train=int(len(chosen)))
        ctx.checkpoint("small-loss", epoch, head=head, opt=opt)
    return MethodOutput(model=ctx.classifier(head), train_logits=head_logits(head, feats_np, ctx.device))


@METHODS.register("small-loss-fft", settings=SmallLossFFTSettings)
@label_quality_doc(GMM_LABEL_QUALITY)
def small_loss_fft(ctx: Context) -> MethodOutput:
    """Small-loss FFT: the whole model, CE warm-up epoch(s), then per-epoch per-class lowest-loss selection."""
    model, opt = ctx.fresh_model()
    loss_fn = create_loss("ce")
    epochs = ctx.epochs_fft
    warmup = ctx.settings.warmup_fft
    start = ctx.resume("fft", model=model, opt=opt)
    for epoch in range(start + 1, epochs + 1):
        chosen = np.arange(len(ctx.train))
        if epoch > warmup:
            with ctx.run.phase("selection"):
                # data-parallel: each rank scores its rows, rank 0 selects, every rank trains on its choice
                losses = ctx.image_losses(model, "train", desc="losses:train")
                chosen = dist.on_main(lambda: keep_lowest(ctx, losses, epoch))
        ctx.fine_tune_epoch(model, chosen, loss_fn, opt, epoch, epochs)
    with ctx.run.phase("selection"):
        logits = ctx.image_logits(model, "train", desc="losses:train")
    return MethodOutput(model=model, train_logits=logits)
