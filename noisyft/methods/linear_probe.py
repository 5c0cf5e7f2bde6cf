"""Linear probing on cached features: the first step of TURN and the *-lp baselines, and the
unlogged probes detectors train on parts of the data (out-of-fold probabilities for cleanlab and
``consensus``).

Every epoch ends with a checkpoint (tag ``lp``: head, optimiser and the loss's
state, e.g. ELR's running targets), so a killed run continues from its last
finished LP epoch with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from noisyft.config import OptimConfig
from noisyft.engine import StepLosses, generator, train_head_epoch, update
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


def _fresh_head(dim: int, num_classes: int, seed: int, salt_base: int, salt: int) -> nn.Linear:
    torch.manual_seed(generator(seed, salt_base, salt).initial_seed())
    return nn.Linear(dim, num_classes)


def fit_probe(feats: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, num_classes: int, *, epochs: int,
              optim: OptimConfig, batch_size: int, seed: int, salt: int, salt_base: int, loss: str = "ce") -> nn.Linear:
    """A fresh linear head trained on ``indices`` of the cached features, not logged or checkpointed.

    Seeded by ``(seed, salt_base, salt)`` (shuffles by ``(seed, salt_base + 1, salt, epoch)``), so two
    callers with different ``salt_base`` draw independent heads.
    """
    head = _fresh_head(feats.shape[1], num_classes, seed, salt_base, salt).to(feats.device)
    opt = optim.build(head.parameters())
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(feats.device)
    f, y = feats[idx], labels[idx]
    loss_fn = create_loss(loss, num_examples=len(f), num_classes=num_classes).to(feats.device)
    for epoch in range(1, epochs + 1):
        train_head_epoch(head, f, y, loss_fn, opt, batch_size=batch_size, gen=generator(seed, salt_base + 1, salt, epoch),
                         epoch=epoch)
    return head


class StackedHeads(nn.Module):
    """K linear heads as one (K, D, C) weight, so one batched matmul and one optimiser step train all K.

    Why: the out-of-fold probes are thousands of steps of a tiny head; on an accelerator each step costs its
    kernel launches, not its arithmetic, so K probes stepped together cost about one. Adam(W) and SGD work
    element by element, so each head's slice follows the update it would get alone.
    """

    def __init__(self, heads: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([h.weight.detach().T for h in heads]).contiguous())  # (K, D, C)
        self.bias = nn.Parameter(torch.stack([h.bias.detach() for h in heads]).unsqueeze(1))        # (K, 1, C)

    def forward(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Logits of every head on its own batch (``x``: (K, B, D)), or of head ``k`` on ``x``: (B, D)."""
        if k is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.addmm(self.bias[k], x, self.weight[k])

    def head(self, k: int) -> nn.Linear:
        """Head ``k`` as a plain ``nn.Linear``."""
        out = nn.Linear(self.weight.shape[1], self.weight.shape[2]).to(self.weight.device)
        with torch.no_grad():
            out.weight.copy_(self.weight[k].T)
            out.bias.copy_(self.bias[k, 0])
        return out


def fit_probes(feats: torch.Tensor, labels: torch.Tensor, folds: list[np.ndarray], num_classes: int, *, epochs: int,
               optim: OptimConfig, batch_size: int, seed: int, salt_base: int, loss: str = "ce") -> list[nn.Linear]:
    """:func:`fit_probe` for each of ``folds`` (salt = its position), stepped together when they can be.

    Same seeds, shuffles and per-head updates as K separate :func:`fit_probe` calls (equal up to float
    rounding); run one by one when the loss keeps per-sample state (buffers) or the folds take different numbers of
    steps per epoch (a head without a batch must not step).
    """
    sizes = [len(f) for f in folds]
    loss_fn = create_loss(loss, num_examples=max(sizes), num_classes=num_classes).to(feats.device)
    stateful = any(True for _ in loss_fn.buffers())  # e.g. ELR's per-sample targets: one head's state each
    if stateful or len({-(-n // batch_size) for n in sizes}) != 1:
        return [fit_probe(feats, labels, f, num_classes, epochs=epochs, optim=optim, batch_size=batch_size, seed=seed,
                          salt=k, salt_base=salt_base, loss=loss) for k, f in enumerate(folds)]
    dev = feats.device
    heads = StackedHeads([_fresh_head(feats.shape[1], num_classes, seed, salt_base, k) for k in range(len(folds))]).to(dev)
    opt = optim.build(heads.parameters())
    idx = [torch.as_tensor(np.asarray(f, dtype=np.int64)).to(dev) for f in folds]
    heads.train()
    for epoch in range(1, epochs + 1):  # each fold's shuffle as fit_probe's, as rows of feats (no per-fold copy)
        orders = [i[torch.randperm(len(i), generator=generator(seed, salt_base + 1, k, epoch)).to(dev, non_blocking=True)]
                  for k, i in enumerate(idx)]
        losses = StepLosses("linear probing", epoch)
        for start in range(0, max(sizes), batch_size):
            b = [o[start: start + batch_size] for o in orders]
            if len({len(rows) for rows in b}) == 1:  # every head's batch the same size: one matmul, one loss call
                rows = torch.stack(b)
                step = loss_fn(heads(feats[rows]).flatten(0, 1), labels[rows.flatten()]) * len(b)
            else:  # the ragged last batch: the heads' mean losses, summed
                step = sum(loss_fn(heads(feats[rows], k), labels[rows]) for k, rows in enumerate(b))
            update(losses.add(step), opt)
        losses.mean()
    return [heads.head(k) for k in range(len(folds))]


@dataclass
class FoldProbes:
    """K probes, each trained on all folds but one, and their out-of-fold probabilities."""

    probs: np.ndarray            # (N, C) float64: row i from the probe that never saw sample i
    heads: list[nn.Linear]

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> np.ndarray:
        """(M, C) float64 probabilities of samples none of the probes trained on: the K probes' mean."""
        probs = [head.eval()(feats).float().softmax(1).cpu().double().numpy() for head in self.heads]
        return np.mean(probs, axis=0)


@torch.no_grad()
def fit_out_of_fold(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int, epochs: int,
                    optim: OptimConfig, batch_size: int, seed: int, salt_base: int, loss: str = "ce") -> FoldProbes:
    """K stratified probes and the (N, C) probabilities each row gets from the probe that never saw that sample.

    Folds are stratified by the given label; their number is capped by the largest class's size (at
    least 2), as scikit-learn's ``StratifiedKFold`` requires.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    y = torch.as_tensor(labels).to(feats.device)
    folds = max(2, min(folds, int(np.bincount(labels).max())))
    probs = np.zeros((len(labels), num_classes))
    split = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))
    with torch.enable_grad():
        heads = fit_probes(feats, y, [train for train, _ in split], num_classes, epochs=epochs, optim=optim,
                           batch_size=batch_size, seed=seed, salt_base=salt_base, loss=loss)
    for head, (_, held) in zip(heads, split):
        head.eval()
        probs[held] = head(feats[torch.as_tensor(held).to(feats.device)]).float().softmax(1).cpu().numpy()
    return FoldProbes(probs, heads)


def out_of_fold_probs(feats: torch.Tensor, labels: np.ndarray, num_classes: int, *, folds: int, epochs: int,
                      optim: OptimConfig, batch_size: int, seed: int, salt_base: int, loss: str = "ce") -> np.ndarray:
    """(N, C) float64 probabilities, each row from a probe that never saw that sample (:func:`fit_out_of_fold`)."""
    return fit_out_of_fold(feats, labels, num_classes, folds=folds, epochs=epochs, optim=optim, batch_size=batch_size,
                           seed=seed, salt_base=salt_base, loss=loss).probs
