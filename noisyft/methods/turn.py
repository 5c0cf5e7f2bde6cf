"""TURN (Ko et al. 2023): linear probing with GCE, then per-epoch GMM clean
selection, class-balanced subsampling and one epoch of full fine-tuning.

Step 1 trains a linear head with GCE (q = 0.7) on cached features, which keeps
the backbone safe from the noise while the head learns to tell clean from
noisy. Step 2 repeats E_FFT times (``--epochs-fft``, 4 by default as in the paper): per-sample CE losses of the current model on
every training sample (eval mode, no augmentation); a two-component GMM per
class; samples whose low-mean-component posterior exceeds τ are clean; N_min of
them per class are drawn uniformly; one epoch of full fine-tuning with CE on that
balanced subset. The first selection uses the cached features (the backbone has
not moved yet), so it costs no image pass.

label_quality: the low-loss-component posterior of the per-class GMM on the
final fine-tuned model's CE losses; is_label_issue: label_quality ≤ τ, the rule
that keeps a sample out of TURN's fine-tuning subset (the report's default, so
TURN passes neither).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from noisyft import dist
from noisyft.engine import head_logits
from noisyft.losses import create_loss, per_sample_ce
from noisyft.methods.base import Context, MethodOutput, label_quality_doc
from noisyft.methods.linear_probe import linear_probe
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings
from noisyft.run.losses import save_losses
from noisyft.selection import balanced_subsample, fit_per_class_gmm, select_clean, selection_metrics

log = logging.getLogger("noisyft")


def gmm_selection(ctx: Context, losses: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class GMM on the per-sample CE losses → clean set → class-balanced subsample; logs the step's stats."""
    labels = ctx.train.labels
    fit = fit_per_class_gmm(losses, labels, ctx.num_classes)
    save_losses(ctx.run, f"epoch{epoch}", losses, fit, ctx.cfg.tau)  # for the report's loss histograms
    clean = select_clean(fit.clean_prob, ctx.cfg.tau)
    chosen, n_min, empty = balanced_subsample(clean, labels, ctx.num_classes, rng)
    few = [ctx.train.classes[c] for c, s in enumerate(fit.status) if s in ("too_few", "constant")]
    if few and epoch == 1:
        log.warning("classes whose losses cannot be split by a GMM (fewer than 2 samples or all equal), kept as clean: %s",
                    ", ".join(few))
    if empty:
        log.warning("epoch %d: classes with no clean sample (skipped this epoch): %s", epoch,
                    ", ".join(ctx.train.classes[c] for c in empty))
    stats = {"gmm_clean": int(clean.sum()), "n_min": int(n_min), "classes_without_clean": [int(c) for c in empty],
             "gmm_status": {s: fit.status.count(s) for s in set(fit.status)}}
    if ctx.train.true_labels is not None:
        m = selection_metrics(clean, labels, ctx.train.true_labels)
        stats.update(gmm_precision=m["precision"], gmm_recall=m["recall"], gmm_f1=m["f1"])
    ctx.log_selection(epoch, chosen, **stats)
    return chosen


@dataclass(frozen=True)
class TurnSettings(MethodSettings):
    """TURN's options are top-level (``tau``, ``gce_q``, ``epochs_lp``, ``epochs_fft``): the paper's own knobs."""

    EPOCHS_FFT = 4  # E_FFT of the TURN paper


@METHODS.register("turn", settings=TurnSettings)
@label_quality_doc("label_quality: posterior of the low-loss component of the per-class 2-component GMM on the final "
                   "fine-tuned model's CE losses; is_label_issue: label_quality ≤ τ (--tau, 0.6), the rule that keeps a "
                   "sample out of TURN's fine-tuning subset")
def turn(ctx: Context) -> MethodOutput:
    """TURN: LP with GCE, then E_FFT rounds of GMM selection + balanced full fine-tuning."""
    cfg = ctx.cfg
    model = ctx.classifier()
    opt = ctx.fft_optim.build(model.parameters())
    start = ctx.resume("fft", model=model, opt=opt)
    epochs = ctx.epochs_fft
    logits = losses = None  # the train set's eval logits (after the last epoch) or per-sample losses (before)
    if start == 0:
        head = linear_probe(ctx, "gce", cfg.epochs_lp, q=cfg.gce_q)
        model.head.load_state_dict(head.state_dict())
        logits = head_logits(head, ctx.features("train"), ctx.device)
        losses = per_sample_ce(logits, torch.as_tensor(ctx.train.labels)).numpy()
    else:
        with ctx.run.phase("selection"):
            logits, losses = _train_pass(ctx, model, final=start >= epochs)
    loss_fn = create_loss("ce")
    for epoch in range(start + 1, epochs + 1):
        with ctx.run.phase("selection"):  # rank 0 selects (it alone holds the losses); every rank trains on its choice
            rng = np.random.default_rng([cfg.seed, 3, epoch])
            chosen = dist.on_main(lambda: gmm_selection(ctx, losses, epoch, rng))
        ctx.fine_tune_epoch(model, chosen, loss_fn, opt, epoch, epochs)
        with ctx.run.phase("selection"):
            logits, losses = _train_pass(ctx, model, final=epoch == epochs)
    return MethodOutput(model=model, train_logits=logits)


def _train_pass(ctx: Context, model, final: bool):
    """The eval pass over the training set: full logits after the last epoch (the label-issue table needs them),
    per-sample losses only before it (all selection needs). Data-parallel, rank 0 receives them (None elsewhere)."""
    if not final:
        return None, ctx.image_losses(model, "train", desc="losses:train")
    logits = ctx.image_logits(model, "train", desc="losses:train")
    return logits, None if logits is None else per_sample_ce(logits, torch.as_tensor(ctx.train.labels)).numpy()
