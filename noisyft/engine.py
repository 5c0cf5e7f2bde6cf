"""Training and evaluation loops shared by every method.

Readable top to bottom, device-agnostic (so ``accelerate`` can wrap it later),
deterministic given a seed: every shuffle uses a generator derived from
``(seed, phase, epoch)`` and every per-sample result is returned in dataset
index order, never batch order.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from noisyft import dist
from noisyft.data.base import LabeledSet, TorchImageDataset
from noisyft.faults import at_fault, maybe_die
from noisyft.features.loader import FullBatches, fixed_shapes, forward_features, make_loader, use_bf16


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the phase, epoch and step."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def generator(seed: int, *salt: int) -> torch.Generator:
    """A torch generator seeded from ``seed`` and a salt (phase id, epoch…)."""
    mixed = int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])
    return torch.Generator().manual_seed(mixed)


def inject_nan(loss: torch.Tensor, where: str, epoch: int, step: int) -> torch.Tensor:
    """``loss``, or NaN at the fault point ``nan:<where>:<epoch>:<step>[@rank]`` (tests; see :mod:`noisyft.faults`)."""
    return torch.tensor(float("nan")) if at_fault(f"nan:{where}:{epoch}:{step}") else loss


def check_finite(loss: torch.Tensor, where: str, epoch: int, step: int, *, inject: bool = True) -> None:
    """Stop on a NaN/inf loss before it reaches the weights (the last checkpoint stays good)."""
    if inject:
        loss = inject_nan(loss, where, epoch, step)
    if not torch.isfinite(loss):
        raise diverged(where, float(loss), epoch, step)


def diverged(where: str, value: float, epoch: int, step: int) -> TrainingDiverged:
    return TrainingDiverged(f"{where}: loss became {value} at epoch {epoch}, step {step}; "
                            f"lower the learning rate (the last good checkpoint is kept)")


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, where: str, epoch: int, step: int) -> None:
    """Check the loss is finite (else stop, naming where), then one plain backward + update."""
    check_finite(loss, where, epoch, step)
    update(loss, opt)


def update(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """One plain backward + optimiser step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class StepLosses:
    """An epoch's step losses, kept on the device and checked for NaN/inf once, at the epoch's end.

    For the loops over cached features, whose steps are a few tiny kernels: checking each step's
    loss (and reading it for the mean) makes the host wait for the accelerator twice a step, which
    costs more than the step. A diverged epoch still stops with the first bad step named, before
    anything of it is logged or checkpointed (a fault-injected NaN stops at once, as before).
    """

    def __init__(self, where: str, epoch: int):
        self.where, self.epoch, self.losses = where, epoch, []

    def add(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` (a scalar), recorded as this epoch's next step."""
        if at_fault(f"nan:{self.where}:{self.epoch}:{len(self.losses)}"):
            raise diverged(self.where, math.nan, self.epoch, len(self.losses))
        self.losses.append(loss.detach())
        return loss

    def mean(self) -> float:
        """The mean step loss (NaN for an empty epoch); raises :class:`TrainingDiverged` if any step's was not finite."""
        if not self.losses:
            return math.nan
        values = torch.stack(self.losses).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            step = int(bad[0, 0])
            raise diverged(self.where, float(values[step]), self.epoch, step)
        return float(values.double().mean())


def accuracy(logits: torch.Tensor | np.ndarray, labels: np.ndarray) -> float:
    return hit_rate(np.asarray(torch.as_tensor(logits).argmax(1)), labels)


def hit_rate(pred: np.ndarray, labels: np.ndarray) -> float:
    """The share of predicted classes equal to ``labels`` (nan for an empty split)."""
    return float((np.asarray(pred) == np.asarray(labels)).mean()) if len(pred) else float("nan")


def train_head_epoch(head: nn.Linear, feats: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module,
                     opt: torch.optim.Optimizer, *, batch_size: int, gen: torch.Generator, epoch: int) -> float:
    """One epoch of linear probing on cached features; returns the mean loss (no host wait per step: :class:`StepLosses`)."""
    head.train()
    order = torch.randperm(len(feats), generator=gen).to(feats.device, non_blocking=True)
    losses = StepLosses("linear probing", epoch)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        update(losses.add(loss_fn(head(feats[idx]), labels[idx], idx)), opt)
    return losses.mean()


@torch.no_grad()
def head_logits(head: nn.Linear, feats: np.ndarray | torch.Tensor, device: torch.device, batch_size: int = 8192) -> torch.Tensor:
    """Logits of a linear head over cached features (eval mode), on the CPU.

    Written batch by batch into one preallocated tensor: at a million rows a list of batches plus
    their concatenation would hold the logits twice at the peak.
    """
    head.eval()
    out = torch.empty(len(feats), head.out_features)
    for i in range(0, len(feats), batch_size):
        x = feats[i: i + batch_size]
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        out[i: i + len(x)] = head(x.to(device)).float().cpu()
    return out


@torch.no_grad()
def image_logits(model: nn.Module, data: LabeledSet, transform: Callable, *, device: torch.device,
                 batch_size: int = 128, num_workers: Optional[int] = None, indices: Optional[Sequence[int]] = None,
                 desc: str = "eval", progress: bool = True, precision: str = "auto") -> torch.Tensor:
    """Eval-mode logits of the whole model for ``data`` (all or ``indices``), in index order."""
    model.eval()
    ds = TorchImageDataset(data, transform, indices)
    out = []
    pad = batch_size if fixed_shapes(device) else 0
    for x, _, _ in tqdm(make_loader(ds, batch_size, num_workers), desc=desc, leave=False, disable=not progress):
        out.append(forward_features(model, x, device, precision, pad).cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def decoded_logits(model: nn.Module, images: torch.Tensor, norm: Callable, *, device: torch.device,
                   batch_size: int = 128, precision: str = "auto") -> torch.Tensor:
    """Eval-mode logits for decoded uint8 images (see :mod:`noisyft.features.decoded`), normalised per batch on ``device``."""
    model.eval()
    pad = batch_size if fixed_shapes(device) else 0
    out = [forward_features(model, norm(images[i: i + batch_size].to(device, non_blocking=True)), device, precision, pad).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def train_mode(model: nn.Module, freeze_bn_stats: bool) -> None:
    """Training mode; with ``freeze_bn_stats`` BatchNorm keeps its pretrained running statistics.

    The linear head was fitted to features computed with those statistics; letting a
    few noisy fine-tuning batches overwrite them shifts every feature at once (on the
    demo, one epoch at lr = 0 cut noisy-validation accuracy from 0.29 to 0.20).
    """
    model.train()
    if freeze_bn_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_image_epoch(model: nn.Module, data: LabeledSet, indices: Sequence[int], transform: Callable,
                      loss_fn: nn.Module, opt: torch.optim.Optimizer, *, device: torch.device, gen: torch.Generator,
                      epoch: int, batch_size: int = 128, num_workers: Optional[int] = None,
                      desc: str = "train", progress: bool = True, freeze_bn_stats: bool = True,
                      precision: str = "auto") -> float:
    """One epoch of full fine-tuning over ``indices`` with augmentation; returns the mean loss.

    On CUDA every batch is a full one (:class:`~noisyft.features.loader.FullBatches`: the short last batch is
    filled up with the epoch's first samples; :func:`~noisyft.features.loader.fixed_shapes` says why); on the CPU
    the last batch is the remainder. In a data-parallel run (:mod:`noisyft.dist`) the epoch is :func:`train_image_epoch_ddp`'s.
    """
    if dist.world_size() > 1:
        return train_image_epoch_ddp(model, data, indices, transform, loss_fn, opt, device=device, gen=gen, epoch=epoch,
                                     batch_size=batch_size, num_workers=num_workers, desc=desc, progress=progress,
                                     freeze_bn_stats=freeze_bn_stats, precision=precision)
    train_mode(model, freeze_bn_stats)
    torch.manual_seed(gen.initial_seed())  # in-process augmentation draws depend on this epoch alone (resume-exact)
    ds = TorchImageDataset(data, transform, indices)
    if fixed_shapes(device):  # no short last batch: a new shape costs cuDNN seconds of compilation
        loader = make_loader(ds, 1, num_workers, batch_sampler=FullBatches(len(ds), batch_size, gen), generator=gen)
    else:  # a 1-sample batch breaks BatchNorm
        loader = make_loader(ds, batch_size, num_workers, shuffle=True, generator=gen, drop_last=len(ds) % batch_size == 1)
    total, steps = 0.0, 0
    use_amp = use_bf16(device, precision)
    for step, (x, y, idx) in enumerate(tqdm(loader, desc=desc, leave=False, disable=not progress)):
        maybe_die(f"train:{epoch}:{step}")
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y, idx = y.to(device), idx.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y, idx)
        optimizer_step(loss, opt, "fine-tuning", epoch, step)
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1) if steps else math.nan


class _Positions(torch.utils.data.Dataset):
    """0…n-1 as a dataset: what a DataLoader's sampler yields, without loading any image."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> int:
        return k


def epoch_batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool, full: bool = False) -> list[np.ndarray]:
    """The positions of each batch of one shuffled epoch, exactly as :func:`train_image_epoch`'s single process
    draws them: the same DataLoader construction over the same generator, wrapped in the same progress bar
    (``tqdm.auto`` opens the loader's iterator once more, and each opening takes a seed from the generator);
    ``full``: in :class:`FullBatches`, as on CUDA."""
    if full:
        loader = make_loader(_Positions(n), 1, 0, batch_sampler=FullBatches(n, batch_size, gen), generator=gen)
    else:
        loader = make_loader(_Positions(n), batch_size, 0, shuffle=True, generator=gen, drop_last=drop_last)
    return [b.numpy() for b in tqdm(loader, disable=True)]


def train_image_epoch_ddp(model: nn.Module, data: LabeledSet, indices: Sequence[int], transform: Callable,
                          loss_fn: nn.Module, opt: torch.optim.Optimizer, *, device: torch.device, gen: torch.Generator,
                          epoch: int, batch_size: int = 128, num_workers: Optional[int] = None, desc: str = "train",
                          progress: bool = True, freeze_bn_stats: bool = True, precision: str = "auto") -> float:
    """One data-parallel epoch (DistributedDataParallel): the single process's global batches, each cut into
    one contiguous part per rank.

    Every rank draws the same batches from the same generator (``--batch-size`` is the global
    batch). A rank's loss is its part's mean weighted by its share of the batch, times the
    world size, so DDP's gradient average is the gradient of the global batch mean, as in one
    process (unequal parts included). The step's loss is summed over ranks before the
    backward pass: a NaN on any rank stops every rank at the same step with the same message.
    A rank whose part is empty (a last batch smaller than the world) runs one sample at weight 0.
    The loss runs inside :func:`noisyft.dist.split_batch`: a loss with per-sample state (ELR's running
    targets, ``consensus``'s temporal ensemble) updates it from every rank's rows
    (:func:`noisyft.dist.global_rows`), so each rank holds the state one process would.
    """
    from torch.nn.parallel import DistributedDataParallel

    world, me = dist.world_size(), dist.rank()
    train_mode(model, freeze_bn_stats)
    ds = TorchImageDataset(data, transform, indices)
    batches = epoch_batches(len(ds), batch_size, gen, drop_last=len(ds) % batch_size == 1, full=fixed_shapes(device))
    parts, sizes = [], []
    for b in batches:
        part = b[len(b) * me // world: len(b) * (me + 1) // world]
        parts.append(part.tolist() if len(part) else b[:1].tolist())
        sizes.append((len(part), len(b)))
    torch.manual_seed(generator(gen.initial_seed(), me).initial_seed())  # this rank's augmentation draws
    loader = make_loader(ds, 1, num_workers, batch_sampler=parts, generator=generator(gen.initial_seed(), me))
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    total, steps = 0.0, 0
    use_amp = use_bf16(device, precision)
    for step, (x, y, idx) in enumerate(tqdm(loader, desc=desc, leave=False, disable=not progress)):
        maybe_die(f"train:{epoch}:{step}")
        mine, whole = sizes[step]
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y, idx = y.to(device, non_blocking=True), idx.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = ddp(x)
        share = mine / whole
        with dist.split_batch(real=mine > 0):  # a loss's per-sample state folds in the whole global batch
            loss = loss_fn(logits.float(), y, idx)
        agreed = dist.all_sum(inject_nan(loss.detach(), "fine-tuning", epoch, step) * share)  # the global batch mean
        check_finite(agreed, "fine-tuning", epoch, step, inject=False)
        opt.zero_grad(set_to_none=True)
        (loss * (share * world)).backward()
        opt.step()
        total, steps = total + float(agreed), steps + 1
    return total / max(steps, 1) if steps else math.nan
