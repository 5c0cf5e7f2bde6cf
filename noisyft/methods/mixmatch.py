"""MixMatch as DivideMix and UNICON use it, plus the two-head co-training loop both share.

Pieces (pure functions, tested on constructed inputs): temperature sharpening,
label guessing for unlabelled samples (mean prediction of both heads over two
augmented views, sharpened), label refinement for labelled samples
(w·ȳ + (1 − w)·p, sharpened), mixup with λ ~ Beta(α, α), λ = max(λ, 1 − λ) so a
mixed sample stays closer to its first source, the semi-supervised loss
(soft CE on mixed labelled samples, MSE on mixed unlabelled ones), DivideMix's
linear ramp-up of the unlabelled weight and the uniform-prior penalty that stops
the predictions collapsing onto a few classes.

Inputs come from a *view source* with two interchangeable flavours:

* :class:`FeatureViews` (``*-lp``): the cached frozen features. Image
  augmentation is not available there, so a *view* is the cached feature vector
  with feature-space augmentation: Gaussian noise scaled by each dimension's
  standard deviation over the training set, then dropout (inverted, so the
  expected feature is unchanged). Mixup mixes feature vectors, which for a
  linear head on a frozen backbone is the natural counterpart of mixing images.
  "weak" and "strong" views differ only in the noise and dropout strengths.
* :class:`ImageViews` (``*-lp-img``): real images through the frozen backbone
  (eval mode, no gradient) with the run's training augmentation as the weak
  view and AutoAugment (CIFAR-10 policy) on top as the strong view; mixup mixes
  images and re-encodes the mixture. Faithful to the papers' LP runs, and about
  four backbone forwards per sample per head and epoch. Data-parallel, each rank
  loads and augments every batch as one process would (the same draws) and encodes
  only its share of the rows; the features are gathered back, so the linear heads
  take the same steps on every rank without DDP.

Selection (GMM or JSD) always scores the cached eval-mode features: the backbone
is frozen, so they are exactly what an eval-mode image pass would give.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from noisyft import dist
from noisyft.methods.settings import MethodSettings
from noisyft.options import NON_NEGATIVE, POSITIVE, Range, option

from noisyft.data.base import LabeledSet, TorchImageDataset
from noisyft.data.transforms import train_transform
from noisyft.engine import StepLosses, generator, head_logits, update
from noisyft.features.loader import forward_features, make_loader
from noisyft.methods.base import Context, MethodOutput, label_quality_doc
from noisyft.methods.registry import METHODS

log = logging.getLogger("noisyft")


@dataclass(frozen=True)
class MixMatchOptions(MethodSettings):
    """The MixMatch settings DivideMix and UNICON share."""

    warmup: int = option(5, "CE warm-up epochs (of the epochs_lp epochs)", range=NON_NEGATIVE)
    rampup: float = option(16.0, "epochs over which the unlabelled-loss weight ramps up after warm-up", range=POSITIVE)
    sharpen_T: float = option(0.5, "sharpening temperature of guessed and refined labels", range=POSITIVE)
    mix_alpha: float = option(4.0, "mixup λ ~ Beta(α, α)", range=POSITIVE)


@dataclass(frozen=True)
class FeatureAugmentOptions:
    """Feature-space augmentation strengths of the cached-feature (``*-lp``) flavours: the weak views."""

    feat_noise: float = option(0.1, "weak view: Gaussian noise × each feature dimension's std", range=NON_NEGATIVE)
    feat_dropout: float = option(0.1, "weak view: dropout rate on the feature vector", range=Range(0, 1, high_open=True))

# ---------------------------------------------------------------------------
# MixMatch pieces
# ---------------------------------------------------------------------------


def sharpen(p: torch.Tensor, T: float = 0.5) -> torch.Tensor:
    """Temperature sharpening p^(1/T), renormalised per row (T < 1 makes rows more confident); entries are
    floored at 1e-12 so a row with zeros (a neighbour vote, an underflowed softmax) stays finite."""
    pt = p.clamp_min(1e-12).pow(1.0 / T)
    return pt / pt.sum(1, keepdim=True)


def guess_labels(probs: Sequence[torch.Tensor], T: float = 0.5) -> torch.Tensor:
    """Targets for unlabelled samples: the mean of several predictions (heads × views), sharpened."""
    return sharpen(torch.stack(list(probs)).mean(0), T)


def refine_labels(probs: Sequence[torch.Tensor], onehot: torch.Tensor, w: torch.Tensor, T: float = 0.5) -> torch.Tensor:
    """Targets for labelled samples: w·ȳ + (1 − w)·mean prediction, sharpened; ``w`` is (B, 1) clean confidence."""
    p = torch.stack(list(probs)).mean(0)
    return sharpen(w * onehot + (1 - w) * p, T)


def mix_lambda(rng: np.random.Generator, alpha: float = 4.0) -> float:
    """λ ~ Beta(α, α) folded to λ ≥ 0.5, so each mixture keeps its first sample's identity."""
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Convex combinations λ·a + (1 − λ)·b of every row with row ``perm[i]``, for inputs and targets alike."""
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


def linear_rampup(current: float, warmup: float, length: float = 16.0) -> float:
    """DivideMix's weight ramp for the unlabelled loss: 0 at the end of warm-up, 1 after ``length`` epochs."""
    if length <= 0:
        return 1.0
    return float(np.clip((current - warmup) / length, 0.0, 1.0))


def semi_loss(logits_x: torch.Tensor, targets_x: torch.Tensor, logits_u: torch.Tensor,
              targets_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lx, Lu): soft cross-entropy on the labelled mixtures, mean squared error of probabilities on the unlabelled ones."""
    lx = -(F.log_softmax(logits_x, 1) * targets_x).sum(1).mean()
    lu = ((logits_u.softmax(1) - targets_u) ** 2).mean() if len(logits_u) else logits_x.new_zeros(())
    return lx, lu


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ mean prediction of the batch): zero when the batch predicts every class equally often."""
    prior = torch.full((logits.shape[1],), 1.0 / logits.shape[1], device=logits.device)
    mean = logits.softmax(1).mean(0)
    return (prior * (prior / mean).log()).sum()


# ---------------------------------------------------------------------------
# View sources: what a "view" of a sample is in feature and image mode
# ---------------------------------------------------------------------------


class FeatureViews:
    """Views of cached features: Gaussian noise (× per-dimension std) then inverted dropout.

    ``weak`` and ``strong`` are ``(noise, dropout)`` pairs; encode is the identity.
    """

    def __init__(self, feats: torch.Tensor, weak: tuple[float, float] = (0.1, 0.1),
                 strong: tuple[float, float] = (0.2, 0.3)):
        self.feats = feats
        self.std = feats.std(0, keepdim=True) if len(feats) > 1 else torch.ones_like(feats[:1])
        self.settings = {"weak": weak, "strong": strong}
        self._cache: dict = {}

    def augment(self, x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
        """One view of CPU features ``x``, drawn from ``gen`` (on an accelerator :meth:`augment_views` draws)."""
        noise, drop = self.settings[kind]
        eps = torch.randn(x.shape, generator=gen)
        keep = (torch.rand(x.shape, generator=gen) >= drop).to(x.dtype) / (1.0 - drop)
        return (x + noise * self.std * eps) * keep

    def augment_views(self, x: torch.Tensor, kinds: Sequence[str], gen: torch.Generator,
                      one_draw: bool = False) -> list[torch.Tensor]:
        """One view of ``x`` per kind. On an accelerator (or with ``one_draw``) every view's noise and dropout
        come from one draw of a generator there, seeded by ``gen`` (reproducible, the same on every rank; two
        random kernels a batch instead of two a view: the heads are tiny, so a step's time is its kernel
        launches); on the CPU each view is :meth:`augment`'s own, so CPU runs keep their numbers."""
        if x.device.type == "cpu" and not one_draw:
            return [self.augment(x, k, gen) for k in kinds]
        g = torch.Generator(device=x.device)
        g.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
        noise, drop = (v.repeat_interleave(len(x)).unsqueeze(1) for v in self._strengths(tuple(kinds)))
        xs = x.repeat(len(kinds), 1)
        eps = torch.randn(xs.shape, generator=g, device=x.device)
        keep = (torch.rand(xs.shape, generator=g, device=x.device) >= drop).to(x.dtype) / (1.0 - drop)
        return list(((xs + noise * self.std * eps) * keep).split(len(x)))

    def _strengths(self, kinds: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, dropout) per kind on the features' device, made once per kinds: copying a new host tensor to
        the device every batch would make the host wait for the device each time."""
        if kinds not in self._cache:
            self._cache[kinds] = tuple(torch.tensor([self.settings[k][i] for k in kinds], dtype=self.feats.dtype)
                                       .to(self.feats.device) for i in (0, 1))
        return self._cache[kinds]

    def batches(self, indices: np.ndarray, batch_size: int, gen: torch.Generator,
                kinds: Sequence[str]) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Shuffled batches of ``indices``: (dataset indices, one augmented tensor per kind)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        order = idx[torch.randperm(len(idx), generator=gen)]
        for start in range(0, len(order), batch_size):
            b = order[start: start + batch_size]
            x = self.feats[b.to(self.feats.device, non_blocking=True)]
            yield b, self.augment_views(x, kinds, gen)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __len__(self) -> int:
        return len(self.feats)


class _MultiView(TorchImageDataset):
    """Images of ``data`` at ``indices``, each returned under several transforms: (index, view1, view2, …)."""

    def __init__(self, data: LabeledSet, transforms: Sequence[Callable], indices: np.ndarray):
        super().__init__(data, None, indices)
        self.transforms = list(transforms)

    def __getitem__(self, k: int):
        i = int(self.indices[k])
        img = self.source.load(i)
        return (i, *[tf(img) for tf in self.transforms])


def strong_transform(ctx: Context):
    """UNICON's strong view: AutoAugment (CIFAR-10 policy) before the run's training augmentation."""
    from torchvision.transforms import v2 as T

    return T.Compose([T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), train_transform(ctx.backbone.preprocess, ctx.cfg.augment)])


class ImageViews:
    """Views of real images: augmented on the fly, encoded by the frozen backbone (eval mode, no gradient)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.tfs = {"weak": ctx.train_tf(), "strong": strong_transform(ctx)}
        ctx.backbone.eval().to(ctx.device)

    def batches(self, indices: np.ndarray, batch_size: int, gen: torch.Generator,
                kinds: Sequence[str]) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        torch.manual_seed(gen.initial_seed())  # augmentation draws depend on this epoch alone (resume-exact)
        ds = _MultiView(self.ctx.train, [self.tfs[k] for k in kinds], indices)
        c = self.ctx.cfg
        for idx, *views in make_loader(ds, batch_size, c.num_workers, shuffle=True, generator=gen):
            yield idx, list(views)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen features of a batch of images (a normal tensor the head can take gradients through).

        Data-parallel: every rank holds the whole batch (the same images and augmentation draws as one
        process), encodes its contiguous share of the rows, and gets every rank's features back in row order
        (:func:`noisyft.dist.all_rows`), so each rank then takes the same head step on the same numbers.
        """
        if dist.world_size() <= 1:
            return forward_features(self.ctx.backbone, x, self.ctx.device).clone()
        n, w, r = len(x), dist.world_size(), dist.rank()
        lo, hi = n * r // w, n * (r + 1) // w
        z = forward_features(self.ctx.backbone, x[lo:hi] if hi > lo else x[:1], self.ctx.device)
        return dist.all_rows(z, real=hi > lo)[0].clone()

    def __len__(self) -> int:
        return len(self.ctx.train)


# ---------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------


@dataclass
class Split:
    """One head's training split: labelled indices with clean confidence ``w``, and the unlabelled rest."""

    labelled: np.ndarray
    w: np.ndarray
    unlabelled: np.ndarray


@dataclass
class MixSettings:
    """MixMatch hyper-parameters (DivideMix defaults) and the extra loss UNICON adds."""

    T: float = 0.5
    alpha: float = 4.0
    lambda_u: float = 25.0
    rampup: float = 16.0
    warmup: int = 5
    strong_mix: bool = False  # UNICON mixes the strong views; DivideMix the weak ones
    extra_loss: Optional[Callable[[nn.Linear, torch.Tensor, torch.Tensor], torch.Tensor]] = None  # (head, u3, u4) → loss


def warmup_epoch(heads: Sequence[nn.Linear], opts: Sequence[torch.optim.Optimizer], views, labels: torch.Tensor, *,
                 batch_size: int, gen: torch.Generator, epoch: int, desc: str = "warm-up", progress: bool = False) -> float:
    """One epoch of CE on every sample (weak views) for each head; the heads share each encoded batch."""
    for h in heads:
        h.train()
    losses = StepLosses("warm-up", epoch)
    for idx, (x,) in tqdm(views.batches(np.arange(len(views)), batch_size, gen, ("weak",)),
                          desc=desc, leave=False, disable=not progress):
        z, y = views.encode(x), labels[idx.to(labels.device, non_blocking=True)]
        for h, opt in zip(heads, opts):
            update(losses.add(F.cross_entropy(h(z), y)), opt)
    return losses.mean()


def _cycle(make: Callable[[int], Iterator]) -> Iterator:
    """Endless iterator over fresh passes ``make(0), make(1), …`` (the unlabelled loader restarts when spent)."""
    k = 0
    while True:
        empty = True
        for item in make(k):
            empty = False
            yield item
        if empty:
            return
        k += 1


def mixmatch_step(head: nn.Linear, peer: nn.Linear, views, xs: list[torch.Tensor], onehot: torch.Tensor, w: torch.Tensor,
                  us: list[torch.Tensor], s: MixSettings, lam: float, perm: torch.Tensor,
                  ramp: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MixMatch loss of one labelled + unlabelled batch for ``head`` (``peer`` only helps guess labels).

    ``xs``/``us`` hold the views: two weak ones, then (UNICON) two strong ones.
    """
    with torch.no_grad():
        zx = [views.encode(v) for v in xs[:2]]
        zu = [views.encode(v) for v in us[:2]] if len(us[0]) else []
        for h in (head, peer):
            h.eval()
        targets_u = guess_labels([h(z).softmax(1) for h in (head, peer) for z in zu], s.T) if zu else onehot[:0]
        targets_x = refine_labels([head(z).softmax(1) for z in zx], onehot, w, s.T)
        head.train()
    mix_x, mix_u = (xs[2:4], us[2:4]) if s.strong_mix else (xs[:2], us[:2])
    inputs = torch.cat([*mix_x, *(mix_u if len(us[0]) else [])])
    targets = torch.cat([targets_x, targets_x, *([targets_u, targets_u] if len(us[0]) else [])])
    mixed_in, mixed_t = mixup(inputs, targets.to(inputs.device), lam, perm.to(inputs.device, non_blocking=True))
    logits = head(views.encode(mixed_in))
    nx = 2 * len(onehot)
    lx, lu = semi_loss(logits[:nx], mixed_t[:nx], logits[nx:], mixed_t[nx:])
    penalty = uniform_prior_penalty(logits)
    loss = lx + s.lambda_u * ramp * lu + penalty
    parts = {"lx": lx.detach(), "lu": lu.detach(), "penalty": penalty.detach()}  # tensors: reading them waits for the device
    if s.extra_loss is not None and len(us[0]) > 1:
        extra = s.extra_loss(head, views.encode(us[2]), views.encode(us[3]))
        loss = loss + extra
        parts["contrastive"] = extra.detach()
    return loss, parts


def mixmatch_epoch(head: nn.Linear, peer: nn.Linear, opt: torch.optim.Optimizer, views, split: Split, labels: torch.Tensor,
                   num_classes: int, s: MixSettings, *, batch_size: int, epoch: int, seed: int, salt: int,
                   desc: str = "mixmatch", progress: bool = False) -> float:
    """One epoch over the labelled split (the unlabelled split cycles alongside); returns the mean loss.

    ``epoch`` is 1-based; the ramp-up uses DivideMix's fractional epoch count.
    """
    kinds = ("weak", "weak", "strong", "strong") if s.strong_mix or s.extra_loss else ("weak", "weak")
    w_all = torch.zeros(len(views))
    w_all[torch.as_tensor(split.labelled)] = torch.as_tensor(split.w, dtype=torch.float32)
    rng = np.random.default_rng([seed, salt, epoch])
    unl = _cycle(lambda k: views.batches(split.unlabelled, batch_size, generator(seed, salt, epoch, 1, k), kinds))
    num_iter = -(-len(split.labelled) // batch_size)
    losses = StepLosses(desc, epoch)
    batches = views.batches(split.labelled, batch_size, generator(seed, salt, epoch, 0), kinds)
    for step, (idx, xs) in enumerate(tqdm(batches, total=num_iter, desc=desc, leave=False, disable=not progress)):
        _, us = next(unl, (None, [x[:0] for x in xs]))
        onehot = F.one_hot(labels[idx.to(labels.device, non_blocking=True)], num_classes).float()
        w = w_all[idx].view(-1, 1).to(onehot.device, non_blocking=True)
        n = 2 * len(idx) + 2 * len(us[0])
        perm = torch.randperm(n, generator=generator(seed, salt, epoch, 2, step))
        ramp = linear_rampup(epoch - 1 + step / num_iter, s.warmup, s.rampup)
        loss, _ = mixmatch_step(head, peer, views, xs, onehot, w, us, s, mix_lambda(rng, s.alpha), perm, ramp)
        update(losses.add(loss), opt)
    return losses.mean()


# ---------------------------------------------------------------------------
# The two-head driver shared by DivideMix and UNICON
# ---------------------------------------------------------------------------


def average_head(a: nn.Linear, b: nn.Linear) -> nn.Linear:
    """One linear head equal to the mean of two: its argmax is the two heads' summed-logit ensemble (how both papers test)."""
    head = nn.Linear(a.in_features, a.out_features).to(a.weight.device)
    with torch.no_grad():
        head.weight.copy_((a.weight + b.weight) / 2)
        head.bias.copy_((a.bias + b.bias) / 2)
    return head


def make_views(ctx: Context, image_mode: bool, feats: torch.Tensor):
    """Feature-space views (cached features) or image views (frozen backbone), with the method's strengths.

    The strong strengths are UNICON's settings; DivideMix uses weak views only.
    """
    if image_mode:
        return ImageViews(ctx)
    s = ctx.settings
    return FeatureViews(feats, weak=(s.feat_noise, s.feat_dropout),
                        strong=(getattr(s, "feat_noise_strong", 0.2), getattr(s, "feat_dropout_strong", 0.3)))


SplitFn = Callable[[int, int, list, torch.Tensor], Split]


def two_head_training(ctx: Context, tag: str, split_fn: SplitFn, settings: MixSettings, image_mode: bool) -> tuple[nn.Linear, nn.Linear]:
    """Warm up two fresh heads with CE, then each epoch MixMatch-train head 1, then head 2, each on its own split.

    ``split_fn(epoch, k, heads, feats)`` gives the split head ``k`` (1 or 2) trains on, called just before
    that head's epoch (DivideMix co-divides from scores taken before either head moves; UNICON rescores
    between the two). Test accuracy is logged per epoch with the averaged head; heads and optimisers are
    checkpointed per epoch, so a killed run resumes at the next epoch.
    """
    cfg = ctx.cfg
    feats = ctx.feature_tensor("train")
    labels = torch.as_tensor(ctx.train.labels).to(ctx.device)
    heads = []
    for k in (1, 2):
        torch.manual_seed(generator(cfg.seed, 20, k).initial_seed())
        heads.append(nn.Linear(feats.shape[1], ctx.num_classes).to(ctx.device))
    opts = [ctx.lp_optim.build(h.parameters()) for h in heads]
    views = make_views(ctx, image_mode, feats)
    bs = max(2, cfg.batch_size // 2)  # the TURN paper halves the batch for the two loaders
    start = ctx.resume(tag, head1=heads[0], head2=heads[1], opt1=opts[0], opt2=opts[1])
    for epoch in range(start + 1, cfg.epochs_lp + 1):
        if epoch <= settings.warmup:
            with ctx.run.phase("lp"):
                loss = warmup_epoch(heads, opts, views, labels, batch_size=bs, gen=generator(cfg.seed, 21, epoch),
                                    epoch=epoch, desc=f"{tag} warm-up {epoch}", progress=cfg.progress)
            values = {"train_loss": loss, "stage": "warmup"}
        else:
            losses, sizes = [], []
            for k in (1, 2):
                with ctx.run.phase("selection"):
                    split = split_fn(epoch, k, heads, feats)
                with ctx.run.phase("lp"):
                    losses.append(mixmatch_epoch(heads[k - 1], heads[2 - k], opts[k - 1], views, split, labels,
                                                 ctx.num_classes, settings, batch_size=bs, epoch=epoch, seed=cfg.seed,
                                                 salt=30 + k, desc=f"{tag} {epoch}/{cfg.epochs_lp} head {k}",
                                                 progress=cfg.progress))
                sizes.append(int(len(split.labelled)))
            values = {"train_loss": float(np.mean(losses)), "stage": "mixmatch", "n_labelled": sizes}
        ctx.log_epoch("lp", epoch, head=average_head(*heads), **values)
        ctx.checkpoint(tag, epoch, head1=heads[0], head2=heads[1], opt1=opts[0], opt2=opts[1])
    return heads[0], heads[1]


@torch.no_grad()
def feature_logits(head: nn.Linear, feats: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of a head on (device) features, on the CPU."""
    head.eval()
    return head(feats).float().cpu()


def two_head_output(ctx: Context, heads: tuple[nn.Linear, nn.Linear], clean_prob: Optional[np.ndarray],
                    is_issue: Optional[np.ndarray] = None) -> MethodOutput:
    """The ensemble (averaged head) as the model, its logits on the cached training features, the detector's
    score and its own verdict (``is_issue``: the samples its clean rule would leave unlabelled)."""
    head = average_head(*heads)
    logits = head_logits(head, ctx.features("train"), ctx.device)
    return MethodOutput(model=ctx.classifier(head), train_logits=logits, clean_prob=clean_prob, is_issue=is_issue)


def register_two_head(name: str, run: Callable[[Context, bool], MethodOutput], *, doc: str, label_quality: str,
                      settings: tuple[type, type]) -> None:
    """Register a two-head method twice: ``<name>`` on cached features, ``<name>-img`` on augmented images.

    ``run(ctx, image_mode)`` is the method; ``doc`` starts its docstring (the input mode ends it);
    ``settings`` are the (feature mode, image mode) settings classes.
    """
    for image_mode, cls in zip((False, True), settings):
        def method(ctx: Context, image_mode: bool = image_mode) -> MethodOutput:
            return run(ctx, image_mode)

        method.__doc__ = doc + (" augmented images through the frozen backbone." if image_mode
                                else " cached features (feature-space augmentation).")
        METHODS.register(name + ("-img" if image_mode else ""), settings=cls)(label_quality_doc(label_quality)(method))
