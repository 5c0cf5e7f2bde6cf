"""Linear probing on cached features: the first step of TURN and the *-lp baselines.

Every epoch ends with a checkpoint (tag ``lp``: head, optimiser and the loss's
state, e.g. ELR's running targets), so a killed run continues from its last
finished LP epoch with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import torch
from torch import nn

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
