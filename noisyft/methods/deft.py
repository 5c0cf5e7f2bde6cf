"""DEFT (Wei et al., NeurIPS 2024): a CLIP-based noisy-label detector, then fine-tuning on what it keeps.

Phase 1, the detector (:class:`DualPromptDetector`): every class gets a positive
and a negative learnable text prompt (:mod:`noisyft.methods.prompts`); the CLIP
image encoder is adapted parameter-efficiently (VPT-deep, :mod:`noisyft.methods.vpt`,
or LoRA on the attention q/v projections through ``peft``); CLIP's own weights
never change. Positive logits are the scaled cosine similarities of the image
with each class's positive prompt; negative logits the same with the negative
prompts but with the image embedding detached, so the negative side trains the
negative prompts only. A sample is clean when softmax([pos_ȳ, neg_ȳ]) puts more
than 0.5 on pos_ȳ (:func:`clean_rule`; the real-noise variant also requires
argmax(pos) = ȳ). Loss (:func:`detector_loss`): CE on the positive logits (all
samples during warm-up, SCE instead of CE for real noise; clean samples after),
plus, on the [pos (detached), neg] pairs, "no" for a random complementary label
≠ ȳ and "yes" for the target (ȳ; after warm-up, argmax(pos) for samples judged
noisy). SGD with a cosine schedule; bf16/fp16 autocast on CUDA.

Phase 2, adaptation: full fine-tuning of ``cfg.backbone`` (any registered
backbone; CLIP's vision tower when it names a CLIP) with CE on the clean subset
only, chosen by one evaluation pass of the final detector (no augmentation).

Data-parallel (``torchrun``/``accelerate launch``): the detector trains on the single process's batches and
complementary labels, each rank on its part of every batch, with the prompt/PEFT gradients summed over ranks
(:func:`train_detector_epoch_dp`); its eval passes are split over ranks at batch boundaries and gather the
per-sample verdicts (:func:`per_sample`), so every rank fine-tunes (DDP) on the same clean subset.

``clip-label-match`` is DEFT's baseline detector: a sample is clean when CLIP's
zero-shot prediction (prompt ``template``) equals its label; then the same phase 2.

Settings (``--extra KEY=VALUE``; defaults are the paper's): see :class:`DualPromptSettings`;
phase 2 runs ``--epochs-fft`` epochs (10, or 5 for real noise, by default).
Outputs: ``label_issues.csv`` with the detector's clean probability
(softmax([pos_ȳ, neg_ȳ])[0], or the zero-shot probability of ȳ) as label quality
and the detector's own verdict (not clean) as ``is_label_issue``;
selection precision/recall/F1 per detector epoch (``stage: detect``, measured on
that epoch's training batches) and for the final selection (``stage: final``,
epoch = detector epochs + 1); detector test accuracy as ``detector_test_acc``;
phase-2 accuracy as ``test_acc``; ``deft.json`` with the settings used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from noisyft import dist
from noisyft.backbones.clip import DEFAULT_CLIP, ClipModel, load_clip
from noisyft.config import FitConfig, OptimConfig
from noisyft.data.base import LabeledSet, TorchImageDataset
from noisyft.data.transforms import eval_transform, train_transform
from noisyft.engine import check_finite, epoch_batches, generator, image_logits, inject_nan
from noisyft.errors import UserError
from noisyft.faults import maybe_die
from noisyft.features.loader import make_loader
from noisyft.losses import SCE, create_loss
from noisyft.methods.base import Context, MethodOutput, label_quality_doc
from noisyft.methods.prompts import DualPromptDetector
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings, resolve_settings
from noisyft.options import NON_NEGATIVE, POSITIVE, Range, option

log = logging.getLogger("noisyft")

PEFT_CHOICES = ("vpt", "lora", "none")
AMP_CHOICES = ("bf16", "fp16", "off")
CLIP_ADAPT_OPTIM = OptimConfig("sgd", 5e-4, 5e-4)  # DEFT phase 2 for CLIP (other backbones: TURN's FFT table)


# --- settings ----------------------------------------------------------------


PROMPT_SLOT = "{}"


@dataclass(frozen=True)
class DualPromptSettings(MethodSettings):
    """DEFT's settings (``--extra KEY=VALUE``; defaults are the paper's).

    The phase-2 fine-tuning budget is ``--epochs-fft`` (default 10, 5 for real
    noise; 0 = detection only, the saved model is then untrained). The CLIP
    defaults to ``cfg.backbone`` when that is a CLIP and the warm-up to 5 for
    real noise (:func:`noisyft.methods.settings.dataset_defaults`).
    """

    EPOCHS_FFT = 10

    clip: str = option(DEFAULT_CLIP, "the phase-1 CLIP: hub id, local dir or open_clip:MODEL:PRETRAINED "
                       "(default: the backbone when it is a CLIP)")
    peft: str = option("vpt", "how the CLIP image encoder is adapted", choices=PEFT_CHOICES)
    vpt_tokens: int = option(20, "VPT-deep tokens per layer", range=Range(1, None))
    lora_rank: int = option(8, "LoRA rank (peft=lora)", range=Range(1, None))
    lora_alpha: float = option(16.0, "LoRA alpha (peft=lora)", range=POSITIVE)
    n_ctx: int = option(16, "learnable context tokens of each text prompt", range=Range(1, None))
    prompt: str = option("{}.", "text after the learnable context ({} = class name)")
    template: str = option("a photo of a {}.", "zero-shot prompt of clip-label-match ({} = class name)")
    class_names: Optional[str] = option(None, "file with one class name per line in class-index order (default: the "
                                        "class folder names, _ read as a space)")
    real_noise: bool = option(False, "real-noise variant: clean also needs argmax(pos) = label; SCE warm-up; "
                              "warm-up 5 and 5 fine-tuning epochs by default")
    detect_epochs: int = option(10, "phase-1 detector epochs", range=NON_NEGATIVE)
    warmup: int = option(1, "phase-1 warm-up epochs (5 for real noise)", range=NON_NEGATIVE)
    lr: float = option(0.03, "phase-1 SGD learning rate", range=POSITIVE)
    momentum: float = option(0.9, "phase-1 SGD momentum", range=Range(0, 1, high_open=True))
    weight_decay: float = option(5e-4, "phase-1 SGD weight decay", range=NON_NEGATIVE)
    detect_batch_size: int = option(64, "phase-1 batch size", range=Range(1, None))
    amp: str = option("bf16", "mixed precision on CUDA", choices=AMP_CHOICES)

    @classmethod
    def from_config(cls, cfg: FitConfig, classes: Sequence[str] = ()) -> "DualPromptSettings":
        """The settings of this run (``cfg.extra`` over the defaults), whatever ``cfg.method`` says."""
        return resolve_settings(cfg, classes, method="deft")

    def epochs_fft_default(self) -> int:
        return 5 if self.real_noise else self.EPOCHS_FFT

    def check(self) -> None:
        for key in ("prompt", "template"):
            if PROMPT_SLOT not in getattr(self, key):
                raise UserError(f"--extra {key}={getattr(self, key)!r}: must contain {{}} where the class name goes")


def class_names(classes: Sequence[str], path: Optional[str] = None) -> list[str]:
    """Names for the prompts: from ``path`` (one per line, class-index order) or the class folder names."""
    if path is None:
        return [c.replace("_", " ") for c in classes]
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise UserError(f"--extra class_names={path}: cannot read it ({e.strerror})") from None
    if len(names) != len(classes):
        raise UserError(f"--extra class_names={path}: {len(names)} names for {len(classes)} classes "
                        f"(one name per line, in class-index order: {', '.join(classes[:5])}…)")
    return names


# --- checkpointable state -------------------------------------------------------


class TrainableState:
    """Checkpoint view of a module holding only its trainable tensors (the frozen CLIP is not saved)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def state_dict(self) -> dict:
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: dict) -> None:
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)


@dataclass
class Detection:
    """A detector's verdict per training sample: clean probability and the clean flag."""

    clean_prob: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    clean: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=bool))

    def state_dict(self) -> dict:
        return {"clean_prob": torch.as_tensor(self.clean_prob), "clean": torch.as_tensor(self.clean)}

    def load_state_dict(self, state: dict) -> None:
        self.clean_prob, self.clean = state["clean_prob"].numpy(), state["clean"].numpy().astype(bool)


# --- the rule and the loss -----------------------------------------------------


def clean_rule(pos: torch.Tensor, neg: torch.Tensor, labels: torch.Tensor, real_noise: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_clean, clean): p_clean_i = softmax([pos_iȳ, neg_iȳ])[0]; clean ⇔ p_clean > 0.5 (∧ argmax pos_i = ȳ_i)."""
    rows = torch.arange(len(labels), device=labels.device)
    p_clean = torch.stack([pos[rows, labels], neg[rows, labels]], dim=1).softmax(dim=1)[:, 0]
    clean = p_clean > 0.5
    if real_noise:
        clean = clean & (pos.argmax(dim=1) == labels)
    return p_clean, clean


class DetectorLoss(NamedTuple):
    total: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    p_clean: torch.Tensor
    clean: torch.Tensor


def negative_loss(pos: torch.Tensor, neg: torch.Tensor, complementary: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−log p(no | complementary label) − log p(yes | target) on softmax([pos (detached), neg]) per class."""
    rows = torch.arange(len(target), device=target.device)
    pair = torch.stack([pos.detach(), neg], dim=-1).log_softmax(dim=-1)  # (B, C, 2): log p(yes), log p(no)
    return -(pair[rows, complementary, 1].mean() + pair[rows, target, 0].mean())


def detector_loss(pos: torch.Tensor, neg: torch.Tensor, labels: torch.Tensor, complementary: torch.Tensor, *,
                  warmup: bool, real_noise: bool = False) -> DetectorLoss:
    """DEFT's phase-1 loss for one batch (see the module docstring)."""
    p_clean, clean = clean_rule(pos.detach(), neg.detach(), labels, real_noise)
    if warmup:
        positive = SCE()(pos, labels) if real_noise else F.cross_entropy(pos, labels)
        target = labels
    else:
        positive = F.cross_entropy(pos[clean], labels[clean]) if clean.any() else pos.sum() * 0.0
        target = torch.where(clean, labels, pos.detach().argmax(dim=1))
    negative = negative_loss(pos, neg, complementary, target)
    return DetectorLoss(positive + negative, positive, negative, p_clean, clean)


def complementary_labels(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the classes other than each sample's given one."""
    shift = torch.randint(1, num_classes, labels.shape, generator=gen)
    return (labels + shift) % num_classes


# --- training and scoring ------------------------------------------------------


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based ``epoch`` under a cosine schedule stepped per epoch (CosineAnnealingLR)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(epochs, 1)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def amp_dtype(device: torch.device, amp: str) -> Optional[torch.dtype]:
    """Autocast dtype on CUDA (None elsewhere or when off)."""
    if device.type != "cuda" or amp == "off":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def train_detector_epoch(detector: DualPromptDetector, data: LabeledSet, transform, opt: torch.optim.Optimizer, *,
                         s: DualPromptSettings, epoch: int, seed: int, device: torch.device,
                         num_workers: Optional[int] = None, progress: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """One detector epoch over every training sample; returns (mean loss, indices seen, their clean flags).

    In a data-parallel run (:mod:`noisyft.dist`) the epoch is :func:`train_detector_epoch_dp`'s.
    """
    if dist.world_size() > 1:
        return train_detector_epoch_dp(detector, data, transform, opt, s=s, epoch=epoch, seed=seed, device=device,
                                       num_workers=num_workers, progress=progress)
    detector.train()
    gen = generator(seed, 11, epoch)
    torch.manual_seed(gen.initial_seed())  # augmentation draws depend on this epoch alone (resume-exact)
    comp_gen = generator(seed, 12, epoch)
    loader = make_loader(TorchImageDataset(data, transform), s.detect_batch_size, num_workers, shuffle=True, generator=gen)
    dtype = amp_dtype(device, s.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    warm = epoch <= s.warmup
    total, steps, seen, flags = 0.0, 0, [], []
    for step, (x, y, idx) in enumerate(tqdm(loader, desc=f"detect {epoch}/{s.detect_epochs}", leave=False, disable=not progress)):
        maybe_die(f"detect:{epoch}:{step}")  # fault injection (resume tests)
        comp = complementary_labels(y, data.num_classes, comp_gen).to(device)
        x, y = x.to(device, non_blocking=True), y.to(device)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            pos, neg = detector.pair_logits(x)
        out = detector_loss(pos.float(), neg.float(), y, comp, warmup=warm, real_noise=s.real_noise)
        check_finite(out.total, "DEFT detector", epoch, step)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            out.total.backward()
            opt.step()
        else:  # fp16: scale the loss so that small gradients do not underflow
            scaler.scale(out.total).backward()
            scaler.step(opt)
            scaler.update()
        total, steps = total + out.total.item(), steps + 1
        seen.append(idx.numpy())
        flags.append(out.clean.cpu().numpy())
    cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt))
    return total / max(steps, 1), cat(seen, np.int64), cat(flags, bool)


def detector_loss_share(pos: torch.Tensor, neg: torch.Tensor, labels: torch.Tensor, complementary: torch.Tensor,
                        clean: torch.Tensor, *, whole: int, n_clean: int, warmup: bool, real_noise: bool = False
                        ) -> torch.Tensor:
    """This rank's share of :func:`detector_loss` of a global batch of ``whole`` samples: its rows' terms over the
    global denominators (``whole``; ``n_clean`` clean samples of the whole batch after warm-up), so the shares of
    every rank sum to the global batch's loss and their gradients to its gradient."""
    if warmup:
        rows = SCE().per_sample(pos, labels) if real_noise else F.cross_entropy(pos, labels, reduction="none")
        positive = rows.sum() / whole
        target = labels
    else:
        positive = (F.cross_entropy(pos[clean], labels[clean], reduction="sum") / n_clean if n_clean
                    else pos.sum() * 0.0)
        target = torch.where(clean, labels, pos.detach().argmax(dim=1))
    at = torch.arange(len(target), device=target.device)
    pair = torch.stack([pos.detach(), neg], dim=-1).log_softmax(dim=-1)
    negative = -(pair[at, complementary, 1].sum() + pair[at, target, 0].sum()) / whole
    return positive + negative


def train_detector_epoch_dp(detector: DualPromptDetector, data: LabeledSet, transform, opt: torch.optim.Optimizer, *,
                            s: DualPromptSettings, epoch: int, seed: int, device: torch.device,
                            num_workers: Optional[int] = None, progress: bool = True
                            ) -> tuple[float, np.ndarray, np.ndarray]:
    """One data-parallel detector epoch: the single process's batches and complementary labels, each batch cut into
    one contiguous part per rank.

    A rank's loss is its rows' share of the global batch's loss (:func:`detector_loss_share`; the clean count of
    the whole batch is summed over ranks first) and the trainable gradients (prompts and PEFT, a few thousand
    numbers) are summed over ranks before the step, so every rank takes the single process's step up to float
    reordering. The step's loss is summed over ranks before the backward pass: a NaN on any rank stops every rank
    at the same step. Augmentation draws are per rank, as in :func:`noisyft.engine.train_image_epoch_ddp`.
    Returns (mean loss, every sample, its clean flag gathered by sample index).
    """
    world, me = dist.world_size(), dist.rank()
    detector.train()
    gen = generator(seed, 11, epoch)
    comp_gen = generator(seed, 12, epoch)
    batches = epoch_batches(len(data), s.detect_batch_size, gen, drop_last=False)
    parts = [b[len(b) * me // world: len(b) * (me + 1) // world] for b in batches]
    torch.manual_seed(generator(gen.initial_seed(), me).initial_seed())  # this rank's augmentation draws
    loader = make_loader(TorchImageDataset(data, transform), 1, num_workers, generator=generator(gen.initial_seed(), me),
                         batch_sampler=[p.tolist() if len(p) else b[:1].tolist() for p, b in zip(parts, batches)])
    params = [p for group in opt.param_groups for p in group["params"]]
    labels_all = torch.as_tensor(data.labels)
    dtype = amp_dtype(device, s.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    warm = epoch <= s.warmup
    total, steps, seen, flags = 0.0, 0, [], []
    for step, (x, y, idx) in enumerate(tqdm(loader, desc=f"detect {epoch}/{s.detect_epochs}", leave=False, disable=not progress)):
        maybe_die(f"detect:{epoch}:{step}")
        b, real = batches[step], len(parts[step]) > 0
        lo = len(b) * me // world
        comp = complementary_labels(labels_all[torch.as_tensor(b)], data.num_classes, comp_gen)[lo: lo + len(x)]
        x, y, comp = x.to(device, non_blocking=True), y.to(device), comp.to(device)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            pos, neg = detector.pair_logits(x)
        pos, neg = pos.float(), neg.float()
        _, clean = clean_rule(pos.detach(), neg.detach(), y, s.real_noise)
        if not real:  # a stand-in sample (this rank has no row of a short batch): it counts for nothing
            pos, neg, y, comp, clean = pos[:0], neg[:0], y[:0], comp[:0], clean[:0]
        n_clean = 0 if warm else int(dist.all_sum(clean.sum().double()).item())
        share = detector_loss_share(pos, neg, y, comp, clean, whole=len(b), n_clean=n_clean, warmup=warm,
                                    real_noise=s.real_noise)
        agreed = dist.all_sum(inject_nan(share.detach(), "DEFT detector", epoch, step))
        check_finite(agreed, "DEFT detector", epoch, step, inject=False)
        opt.zero_grad(set_to_none=True)
        (share if scaler is None else scaler.scale(share)).backward()
        dist.sum_grads(params)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        total, steps = total + float(agreed), steps + 1
        if real:
            seen.append(idx.numpy())
            flags.append(clean.cpu().numpy())
    cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt))
    gathered = dist.gather_by_index(cat(flags, bool), cat(seen, np.int64), len(data), dst=None)
    return total / max(steps, 1), np.arange(len(data)), gathered


class _PairScorer(nn.Module):
    """Image → [positive | negative] logits against text features encoded once (evaluation passes)."""

    def __init__(self, detector: DualPromptDetector):
        super().__init__()
        self.detector = detector
        with torch.inference_mode():
            self.text = tuple(t.clone() for t in detector.text_features())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.detector.pair_logits(x, self.text), dim=1)


class ZeroShotClassifier(nn.Module):
    """CLIP zero-shot: scaled cosine similarity of the image with each class's prompt."""

    def __init__(self, clip: ClipModel, names: Sequence[str], template: str):
        super().__init__()
        self.clip = clip
        with torch.inference_mode():
            text = F.normalize(clip.encode_text([template.format(n) for n in names]).float(), dim=-1)
        self.register_buffer("text", text.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.clip.encode_image(x).float(), dim=-1)
        return self.clip.logit_scale * img @ self.text.T


def _logits(ctx: Context, model: nn.Module, data: LabeledSet, transform, desc: str) -> torch.Tensor:
    c = ctx.cfg
    return image_logits(model, data, transform, device=ctx.device, batch_size=c.batch_size, num_workers=c.num_workers,
                        desc=desc, progress=c.progress)


def per_sample(ctx: Context, model: nn.Module, data: LabeledSet, transform, desc: str, width: int,
               stats: Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``stats(logits, labels)``: per-sample arrays of an eval pass of ``model`` (``width`` outputs) over ``data``,
    in index order, on every rank.

    Data-parallel: each rank scores its contiguous slice cut at batch boundaries (the batches one process forms,
    so the same numbers) and the compact per-sample arrays, not the logits, are gathered by sample index.
    """
    labels = torch.as_tensor(data.labels)
    if dist.world_size() <= 1:
        return stats(_logits(ctx, model, data, transform, desc), labels)
    c = ctx.cfg
    rows = dist.shard(len(data), align=c.batch_size)
    logits = (image_logits(model, data, transform, device=ctx.device, batch_size=c.batch_size,
                           num_workers=c.num_workers, desc=desc, progress=c.progress, indices=rows)
              if len(rows) else torch.zeros(0, width))
    return tuple(dist.gather_by_index(a, rows, len(data), dst=None) for a in stats(logits, labels[rows]))


def detector_scores(ctx: Context, detector: DualPromptDetector, data: LabeledSet, transform, desc: str,
                    real_noise: bool = False) -> Detection:
    """The detector's verdict (:func:`clean_rule` on eval-mode logits) on every sample of ``data``, in index order."""
    c = data.num_classes

    def stats(both: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        p_clean, clean = clean_rule(both[:, :c], both[:, c:], labels, real_noise)
        return p_clean.numpy(), clean.numpy()

    p_clean, clean = per_sample(ctx, _PairScorer(detector), data, transform, desc, 2 * c, stats)
    return Detection(p_clean.astype(np.float64), clean)


def _log_detector_accuracy(ctx: Context, model: nn.Module, transform, phase: str, epoch: int, positive: bool,
                           **values) -> None:
    """A metrics record with the detector's accuracy as ``detector_<split>_acc`` (kept apart from phase 2's)."""
    rec = {"phase": phase, "epoch": epoch, **values}
    for split in ("val", "test"):
        data = getattr(ctx, split)
        if data is None:
            continue
        c = data.num_classes
        with ctx.run.phase("evaluation"):
            (pred,) = per_sample(ctx, model, data, transform, f"eval:{split}", 2 * c if positive else c,
                                 lambda logits, _: (np.asarray((logits[:, :c] if positive else logits).argmax(1)),))
        truth = data.labels if split == "val" or data.true_labels is None else data.true_labels
        rec[f"detector_{split}_acc"] = float((pred == np.asarray(truth)).mean()) if len(pred) else float("nan")
    ctx.run.log("metrics", rec)


def _log_final_selection(ctx: Context, epoch: int, detection: Detection, stage: str) -> None:
    labels = ctx.train.labels
    empty = [ctx.train.classes[c] for c in range(ctx.num_classes) if (labels == c).any() and not detection.clean[labels == c].any()]
    if empty:
        log.warning("%s: classes with no sample judged clean (left out of fine-tuning): %s", stage, ", ".join(empty))
    ctx.log_selection(epoch, np.flatnonzero(detection.clean), stage=stage,
                      mean_clean_prob=float(np.mean(detection.clean_prob)) if len(detection.clean_prob) else float("nan"),
                      classes_without_clean=len(empty))


def run_detector(ctx: Context, s: DualPromptSettings) -> Detection:
    """Phase 1: train the dual-prompt detector (checkpointed per epoch as ``deft1``), then score every sample."""
    cfg = ctx.cfg
    if ctx.num_classes < 2:
        raise UserError("DEFT needs at least two classes (complementary labels)")
    with ctx.run.phase("detect"):
        clip = load_clip(s.clip, ctx.device)
        detector = DualPromptDetector(clip, class_names(ctx.train.classes, s.class_names), n_ctx=s.n_ctx,
                                      prompt=s.prompt, peft=s.peft, vpt_tokens=s.vpt_tokens, lora_rank=s.lora_rank,
                                      lora_alpha=s.lora_alpha, seed=cfg.seed)
    params = [p for p in detector.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    trainable = TrainableState(detector)
    start = ctx.resume("deft1", detector=trainable, opt=opt)
    train_tf, eval_tf = train_transform(clip.preprocess, cfg.augment), eval_transform(clip.preprocess)
    for epoch in range(start + 1, s.detect_epochs + 1):
        set_lr(opt, cosine_lr(s.lr, epoch, s.detect_epochs))
        with ctx.run.phase("detect"):
            loss, seen, flags = train_detector_epoch(detector, ctx.train, train_tf, opt, s=s, epoch=epoch, seed=cfg.seed,
                                                     device=ctx.device, num_workers=cfg.num_workers, progress=cfg.progress)
        ctx.log_selection(epoch, seen[flags], stage="detect", warmup=epoch <= s.warmup)
        _log_detector_accuracy(ctx, _PairScorer(detector), eval_tf, "detect", epoch, True, train_loss=loss,
                               lr=opt.param_groups[0]["lr"])
        ctx.checkpoint("deft1", epoch, detector=trainable, opt=opt)
    with ctx.run.phase("selection"):
        detection = detector_scores(ctx, detector, ctx.train, eval_tf, "detect:train", s.real_noise)
    _log_final_selection(ctx, s.detect_epochs + 1, detection, "final")
    return detection


def zero_shot_detection(ctx: Context, s: DualPromptSettings) -> Detection:
    """clip-label-match: clean ⇔ CLIP's zero-shot prediction equals the given label."""
    with ctx.run.phase("detect"):
        clip = load_clip(s.clip, ctx.device)
        zero_shot = ZeroShotClassifier(clip, class_names(ctx.train.classes, s.class_names), s.template)
    tf = eval_transform(clip.preprocess)

    def stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        prob = logits.softmax(dim=1)[torch.arange(len(labels)), labels]
        return prob.numpy(), (logits.argmax(dim=1) == labels).numpy()

    with ctx.run.phase("selection"):
        prob, match = per_sample(ctx, zero_shot, ctx.train, tf, "zero-shot:train", ctx.num_classes, stats)
    detection = Detection(prob.astype(np.float64), match)
    _log_detector_accuracy(ctx, zero_shot, tf, "zero-shot", 0, False)
    _log_final_selection(ctx, 1, detection, "zero-shot")
    return detection


# --- phase 2 and the methods ---------------------------------------------------


def adapt_optim(ctx: Context) -> OptimConfig:
    """Phase-2 optimiser: ``--fft-optim`` if given; DEFT's CLIP row for a CLIP backbone; else the backbone's FFT default."""
    if ctx.cfg.fft_optim is None and ctx.backbone.family == "clip":
        return CLIP_ADAPT_OPTIM
    return ctx.fft_optim


def adapt(ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, optim: OptimConfig,
          detection: Detection, start: int) -> None:
    """Phase 2: ``ctx.epochs_fft`` epochs of full fine-tuning with CE on the clean subset (cosine schedule),
    checkpointed as ``deft2``."""
    chosen = np.flatnonzero(detection.clean)
    epochs = ctx.epochs_fft
    if epochs and not len(chosen):
        raise UserError("the detector judged no training sample clean, so there is nothing to fine-tune on; "
                        "check the class names (--extra class_names=FILE) and the CLIP (--extra clip=...)")
    loss_fn = create_loss("ce")
    for epoch in range(start + 1, epochs + 1):
        set_lr(opt, cosine_lr(optim.lr, epoch, epochs))
        ctx.fine_tune_epoch(model, chosen, loss_fn, opt, epoch, epochs, tag="deft2",
                            states={"model": model, "opt": opt, "detection": detection}, lr=opt.param_groups[0]["lr"])


def _two_phase(ctx: Context, detect) -> MethodOutput:
    """Detect (unless resuming phase 2), fine-tune on the clean subset, report the detector's clean probability."""
    s: DualPromptSettings = ctx.settings
    optim = adapt_optim(ctx)
    model, opt = ctx.fresh_model(optim)
    detection = Detection()
    start = ctx.resume("deft2", model=model, opt=opt, detection=detection)
    ctx.run.write_json("deft.json", {**dataclasses.asdict(s), "epochs_fft": ctx.epochs_fft,
                                     "adapt_optim": dataclasses.asdict(optim)})
    if start == 0:
        detection = detect(ctx, s)
    if ctx.epochs_fft == 0:
        log.warning("epochs_fft=0: detection only; the saved model's head is untrained")
    adapt(ctx, model, opt, optim, detection, start)
    with ctx.run.phase("selection"):
        logits = ctx.image_logits(model, "train", desc="logits:train")
    return MethodOutput(model=model, train_logits=logits, clean_prob=detection.clean_prob, is_issue=~detection.clean,
                        info={"n_clean": int(detection.clean.sum())})


@METHODS.register("deft", settings=DualPromptSettings)
@label_quality_doc("label_quality: the dual-prompt detector's p_clean = softmax([pos_ȳ, neg_ȳ])[0] for the given label "
                   "ȳ; is_label_issue: the detector's verdict, not clean (p_clean ≤ 0.5; with real_noise also when "
                   "argmax pos ≠ ȳ), the samples fine-tuning leaves out")
def deft(ctx: Context) -> MethodOutput:
    """DEFT: dual-prompt CLIP detector (PEFT), then full fine-tuning of the backbone on the clean subset."""
    return _two_phase(ctx, run_detector)


@METHODS.register("clip-label-match", settings=DualPromptSettings)
@label_quality_doc("label_quality: CLIP's zero-shot probability of the given label; is_label_issue: CLIP's zero-shot "
                   "prediction differs from the given label (the samples fine-tuning leaves out)")
def clip_label_match(ctx: Context) -> MethodOutput:
    """CLIP zero-shot label match as the detector, then DEFT's phase 2 on the matching samples."""
    return _two_phase(ctx, zero_shot_detection)
