"""Linear probing on cached features: the first step of TURN and the *-lp baselines, and the
unlogged probes detectors train on parts of the data (out-of-fold probabilities for cleanlab and
``consensus``).

Every epoch ends with a checkpoint (tag ``lp``: head, optimiser and the loss's
state, e.g. ELR's running targets), so a killed run continues from its last
finished LP epoch with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from noisyft.config import OptimConfig
from noisyft.engine import generator, train_head_epoch
from noisyft.faults import maybe_die
from noisyft.losses import create_loss
from noisyft.methods.base import Context

TAG = "lp"


def linear_probe(ctx: Context, loss_name: str, epochs: int, **loss_kw) -> nn.Linear:
    """Train a fresh linear head on the frozen training features for ``epochs``; log test accuracy per epoch.

    Resumes from an ``lp`` checkpoint of this run when there is one.
    """
    feats = ctx.feature_tensor("train")
    labels = torch.as_tensor(ctx.train.labels).to(ctx.device)
    torch.manual_seed(generator(ctx.cfg.seed, 1).initial_seed())
    head = nn.Linear(feats.shape[1], ctx.num_classes).to(ctx.device)
    loss_fn = create_loss(loss_name, num_examples=len(feats), num_classes=ctx.num_classes, **loss_kw).to(ctx.device)
    opt = ctx.lp_optim.build(head.parameters())
    start = ctx.resume(TAG, head=head, opt=opt, loss=loss_fn)
    for epoch in range(start + 1, epochs + 1):
        with ctx.run.phase("lp"):
            loss = train_head_epoch(head, feats, labels, loss_fn, opt, batch_size=ctx.cfg.batch_size,
                                    gen=generator(ctx.cfg.seed, 2, epoch), epoch=epoch)
        ctx.log_epoch("lp", epoch, head=head, train_loss=loss)
        maybe_die(f"lp:{epoch}")  # fault injection: after the epoch's record, before its checkpoint
        ctx.checkpoint(TAG, epoch, head=head, opt=opt, loss=loss_fn)
    return head


def fit_probe(feats: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, num_classes: int, *, epochs: int,
              optim: OptimConfig, batch_size: int, seed: int, salt: int, salt_base: int, loss: str = "ce") -> nn.Linear:
    """A fresh linear head trained on ``indices`` of the cached features, not logged or checkpointed.

    Seeded by ``(seed, salt_base, salt)`` (shuffles by ``(seed, salt_base + 1, salt, epoch)``), so two
    callers with different ``salt_base`` draw independent heads.
    """
    torch.manual_seed(generator(seed, salt_base, salt).initial_seed())
    head = nn.Linear(feats.shape[1], num_classes).to(feats.device)
    opt = optim.build(head.parameters())
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(feats.device)
    f, y = feats[idx], labels[idx]
    loss_fn = create_loss(loss, num_examples=len(f), num_classes=num_classes).to(feats.device)
    for epoch in range(1, epochs + 1):
        train_head_epoch(head, f, y, loss_fn, opt, batch_size=batch_size, gen=generator(seed, salt_base + 1, salt, epoch),
                         epoch=epoch)
    return head


@torch.no_grad()
def out_of_fold_probs(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int, epochs: int,
                      optim: OptimConfig, batch_size: int, seed: int, salt_base: int, loss: str = "ce") -> np.ndarray:
    """(N, C) float64 probabilities, each row from a probe that never saw that sample.

    Folds are stratified by the given label; their number is capped by the largest class's size (at
    least 2), as scikit-learn's ``StratifiedKFold`` requires.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    y = torch.as_tensor(labels).to(feats.device)
    folds = max(2, min(folds, int(np.bincount(labels).max())))
    probs = np.zeros((len(labels), num_classes))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (train_idx, held) in enumerate(split.split(np.zeros(len(labels)), labels)):
        with torch.enable_grad():
            head = fit_probe(feats, y, train_idx, num_classes, epochs=epochs, optim=optim, batch_size=batch_size,
                             seed=seed, salt=k, salt_base=salt_base, loss=loss)
        head.eval()
        probs[held] = head(feats[torch.as_tensor(held).to(feats.device)]).float().softmax(1).cpu().numpy()
    return probs
