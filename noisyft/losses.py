"""Training losses for noisy labels: CE, GCE, SCE and ELR.

Every loss is called as ``loss(logits, targets, index)`` where ``index`` holds
the samples' dataset positions (ELR keeps a per-sample target; the others
ignore it), so one training loop serves them all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisyft import dist
from noisyft.registry import Registry

LOSSES: Registry = Registry("loss")


class CE(nn.Module):
    """Plain cross-entropy."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(logits, targets)


class GCE(nn.Module):
    """Generalised cross-entropy (Zhang & Sabuncu 2018): L = (1 − p_ȳ^q) / q.

    q → 0 recovers CE, q = 1 is MAE; q = 0.7 (TURN's LP loss) trades CE's fast
    fitting for MAE's robustness to wrong labels.
    """

    def __init__(self, q: float = 0.7):
        super().__init__()
        self.q = q

    def forward(self, logits, targets, index=None):
        p = F.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1).clamp_min(1e-7)
        return ((1 - p.pow(self.q)) / self.q).mean()


def reverse_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample reverse cross-entropy −Σ_k p_k log t_k: the prediction scored against a target distribution
    (one-hot or soft), log 0 := log 1e-4 — SCE's RCE term."""
    p = F.softmax(logits, dim=1).clamp(1e-7, 1.0)
    return -(p * target.clamp(1e-4, 1.0).log()).sum(1)


class SCE(nn.Module):
    """Symmetric cross-entropy (Wang et al. 2019): α·CE + β·RCE, RCE with log 0 := −4 (A = −4)."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, num_classes: int | None = None):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def per_sample(self, logits, targets):
        """α·CE_i + β·RCE_i of each sample (a data-parallel share sums them over the global batch size)."""
        ce = F.cross_entropy(logits, targets, reduction="none")
        return self.alpha * ce + self.beta * reverse_ce(logits, F.one_hot(targets, logits.shape[1]).float())

    def forward(self, logits, targets, index=None):
        return self.per_sample(logits, targets).mean()


class ELR(nn.Module):
    """Early-learning regularisation (Liu et al. 2020).

    Keeps a running target t_i ← β t_i + (1 − β) p̂_i per sample (p clamped to
    [1e-4, 1 − 1e-4], renormalised, detached) and adds λ·mean(log(1 − ⟨t_i, p_i⟩)),
    which pulls predictions towards what the model learnt early, before it
    memorises wrong labels. Needs the dataset size and each batch's ``index``.
    In a data-parallel step the targets fold in every rank's rows (:func:`noisyft.dist.global_rows`),
    so each rank keeps the targets of one process.
    """

    def __init__(self, num_examples: int, num_classes: int, beta: float = 0.7, lam: float = 3.0):
        super().__init__()
        self.beta, self.lam = beta, lam
        self.register_buffer("target", torch.zeros(num_examples, num_classes))

    def regulariser(self, logits, index):
        """mean(log(1 − ⟨t_i, p_i⟩)) after folding this batch's predictions into the running targets."""
        p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            every, p_all = dist.global_rows(index, p)  # data-parallel: the whole global batch (one process: as is)
            p_hat = p_all / p_all.sum(1, keepdim=True)
            self.target[every] = self.beta * self.target[every] + (1 - self.beta) * p_hat
        return (1 - (self.target[index] * p).sum(1)).log().mean()

    def forward(self, logits, targets, index):
        reg = self.regulariser(logits, index)
        return F.cross_entropy(logits, targets) + self.lam * reg


LOSSES.register("ce")(lambda **kw: CE())
LOSSES.register("gce")(lambda q=0.7, **kw: GCE(q))
LOSSES.register("sce")(lambda alpha=1.0, beta=1.0, **kw: SCE(alpha, beta))
LOSSES.register("elr")(lambda num_examples, num_classes, beta=0.7, lam=3.0, **kw: ELR(num_examples, num_classes, beta, lam))


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss by name; extra keyword arguments a loss does not use are ignored."""
    return LOSSES.get(name)(**kwargs)


def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unreduced cross-entropy: the selection signal of TURN, DivideMix and small-loss."""
    return F.cross_entropy(logits.float(), targets, reduction="none")
