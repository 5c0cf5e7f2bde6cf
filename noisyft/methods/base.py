"""What a method receives (a Context) and returns (a MethodOutput).

A method is a function ``(ctx) -> MethodOutput`` registered by name in
``noisyft.methods.METHODS``. The context hands it data, the backbone, cached
features, evaluation and logging, so a method holds only its own algorithm.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from noisyft import dist
from noisyft.backbones.base import Backbone, Classifier
from noisyft.config import FitConfig, OptimConfig
from noisyft.data.base import LabeledSet
from noisyft.data.transforms import eval_transform, normalize, train_transform
from noisyft.features.decoded import decode_images, decoded_bytes
from noisyft.engine import decoded_logits, generator, head_logits, hit_rate, image_logits, train_image_epoch
from noisyft.features.cache import extract_features
from noisyft.losses import per_sample_ce
from noisyft.methods.settings import MethodSettings, resolve_settings
from noisyft.run.rundir import RunDir
from noisyft.selection import selection_metrics

log = logging.getLogger(__name__)

# Fewer optimiser steps than this from a fresh head draw a warning. Measured at 297 CIFAR-10 training images, 64 px
# (benchmarks/results/new_method_design.md §16): 5 epochs (15 steps) ended 15 points below the linear probe, 20 epochs
# (60 steps) above it; the grids' 1,800-image runs (75 steps) end above it.
FEW_FFT_STEPS = 50


# Methods that run data-parallel (torchrun / accelerate launch with several processes): their image passes go
# through Context (sharded, gathered by sample index) and their fine-tuning through train_image_epoch (DDP; a loss's
# per-sample state folds in the whole global batch, see noisyft.dist.global_rows); the cached-feature ones (linear
# probes, detectors, two-head LP) compute the same thing on every rank from the shared feature cache. The two-head
# *-lp-img methods split each batch's frozen-backbone forwards over the ranks (mixmatch.ImageViews.encode); DEFT's
# detector sums its prompt/PEFT gradients over ranks (deft.train_detector_epoch_dp) and its eval passes gather
# per-sample verdicts (deft.per_sample). Every built-in method is here; a method registered elsewhere is refused
# until it is added (tests/test_distributed.py checks each one here against one process).
DATA_PARALLEL = frozenset({"turn", "ce-fft", "gce-fft", "sce-fft", "elr-fft", "ce-lp", "gce-lp", "sce-lp", "elr-lp",
                           "consensus", "consensus-detect", "cleanlab", "cleanlab-fft", "small-loss-lp",
                           "small-loss-fft", "unicon-lp", "dividemix-lp", "unicon-lp-img", "dividemix-lp-img",
                           "deft", "clip-label-match"})


@dataclass
class MethodOutput:
    """A trained model plus its eval-mode logits on every training sample (index order).

    ``clean_prob`` lets a detector give its own clean probability per sample; when
    None, the label-issue report fits the per-class GMM to the final losses.
    ``is_issue`` gives the method's own flags wherever its rule is not ``clean_prob ≤ τ``
    (DivideMix's p_threshold, UNICON's uniform JSD selection, cleanlab's and DEFT's verdicts);
    what both mean for a method is its ``LABEL_QUALITY`` (see :func:`label_quality_doc`).
    """

    model: nn.Module
    train_logits: torch.Tensor
    clean_prob: Optional[np.ndarray] = None
    is_issue: Optional[np.ndarray] = None  # the method's own flags; default: clean_prob <= τ
    info: dict = field(default_factory=dict)
    # (N, C) the detector's class probabilities of the training samples, where the method has them (out-of-fold for
    # cleanlab); the confident-joint noise-rate estimate uses them instead of the final model's in-sample softmax
    pred_probs: Optional[np.ndarray] = None


@dataclass
class Context:
    """Data, backbone, run directory and shared helpers for one method run."""

    cfg: FitConfig
    train: LabeledSet
    test: Optional[LabeledSet]
    val: Optional[LabeledSet]
    backbone: Backbone
    run: RunDir
    device: torch.device
    lp_optim: OptimConfig
    fft_optim: OptimConfig
    resume_state: Optional[dict] = None
    _features: dict = field(default_factory=dict, repr=False)  # split → memmap, looked up once per run
    _tensors: dict = field(default_factory=dict, repr=False)   # split → in-memory tensor of those features
    _decoded: dict = field(default_factory=dict, repr=False)   # split → decoded uint8 images, or None (over budget)
    _settings: Optional[MethodSettings] = field(default=None, repr=False)
    val_predictions: Optional[np.ndarray] = field(default=None, repr=False)  # see log_epoch
    val_probs: Optional[np.ndarray] = field(default=None, repr=False)  # see log_epoch

    @property
    def settings(self) -> MethodSettings:
        """The method's typed settings for this run (``--extra`` over data-dependent defaults over field defaults)."""
        if self._settings is None:
            self._settings = resolve_settings(self.cfg, self.train.classes)
        return self._settings

    @property
    def epochs_fft(self) -> int:
        """Full fine-tuning epochs: ``--epochs-fft`` when given, else the method's own default."""
        if self.cfg.epochs_fft is not None:
            return self.cfg.epochs_fft
        return self.settings.epochs_fft_default() or 0

    def resume(self, tag: str, **objects) -> int:
        """Load the checkpoint of loop ``tag`` into ``objects`` (modules, optimisers); return its epoch (0: none)."""
        ck = self.resume_state
        if not ck or ck["tag"] != tag:
            return 0
        for name, obj in objects.items():
            obj.load_state_dict(ck["states"][name])
        return int(ck["epoch"])

    def checkpoint(self, tag: str, epoch: int, **objects) -> None:
        """Save the state of ``objects`` after ``epoch`` of loop ``tag`` (with the logs so far)."""
        self.run.save_checkpoint(tag, epoch, {name: obj.state_dict() for name, obj in objects.items()})

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def features(self, split: str) -> np.ndarray:
        """Cached frozen features of ``train``/``test``/``val`` (timed as 'extraction')."""
        if split in self._features:
            return self._features[split]
        data = getattr(self, split)
        with self.run.phase("extraction"):
            self._features[split] = extract_features(self.backbone, data.source, cache_dir=self.cfg.cache_dir, batch_size=self.cfg.batch_size,
                                    num_workers=self.cfg.num_workers, device=self.device, progress=self.cfg.progress,
                                    desc=f"features:{split}", precision=self.cfg.precision)
        return self._features[split]

    def feature_tensor(self, split: str = "train") -> torch.Tensor:
        """The cached features of ``split`` as one in-memory tensor on the run's device (copied once per run)."""
        if split not in self._tensors:
            self._tensors[split] = torch.from_numpy(np.array(self.features(split))).to(self.device)
        return self._tensors[split]

    def fresh_model(self, optim: Optional[OptimConfig] = None) -> tuple[Classifier, torch.optim.Optimizer]:
        """A seeded backbone + fresh head and its fine-tuning optimiser (``fft_optim`` unless given)."""
        torch.manual_seed(self.cfg.seed)
        model = self.classifier()
        self._warn_few_steps()
        return model, (optim or self.fft_optim).build(model.parameters())

    def _warn_few_steps(self) -> None:
        """Say so when fine-tuning from a fresh head gets too few optimiser steps to overtake the linear probe."""
        batches = math.ceil(len(self.train) / self.cfg.batch_size)
        steps, enough = self.epochs_fft * batches, math.ceil(FEW_FFT_STEPS / batches)
        if 0 < steps < FEW_FFT_STEPS and dist.is_main():  # a data-parallel run says it once
            log.warning("fine-tuning takes only %d optimiser steps (%d epochs × %d batches of %d training images): "
                        "from a fresh head this few can end below the linear probe; --epochs-fft %d makes %d",
                        steps, self.epochs_fft, batches, len(self.train), enough, enough * batches)

    def eval_tf(self):
        return eval_transform(self.backbone.preprocess)

    def train_tf(self):
        return train_transform(self.backbone.preprocess, self.cfg.augment)

    def classifier(self, head: Optional[nn.Linear] = None) -> Classifier:
        model = Classifier(self.backbone, self.num_classes)
        if head is not None:
            model.head.load_state_dict(head.state_dict())
        return model.to(self.device, memory_format=torch.channels_last)  # the layout extraction uses: same numbers

    def decoded(self, split: str) -> Optional[torch.Tensor]:
        """``split``'s images decoded once and kept in memory (None when over ``image_cache_mb``); in a
        data-parallel run, this rank's share of them (:meth:`eval_rows`)."""
        if split not in self._decoded:
            data, c, pre = getattr(self, split), self.cfg, self.backbone.preprocess
            rows = self.eval_rows(split) if dist.world_size() > 1 else None
            used = sum(t.numel() for t in self._decoded.values() if t is not None)
            fits = used + decoded_bytes(len(data) if rows is None else len(rows), pre) <= c.image_cache_mb * 2 ** 20
            self._decoded[split] = decode_images(data, pre, batch_size=c.batch_size, num_workers=c.num_workers,
                                                 desc=f"decode:{split}", progress=c.progress,
                                                 indices=rows) if fits else None
        return self._decoded[split]

    def eval_rows(self, split: str) -> np.ndarray:
        """The samples of ``split`` this rank evaluates: a contiguous slice cut at batch boundaries (all of them alone)."""
        return dist.shard(len(getattr(self, split)), align=self.cfg.batch_size)

    def _logits(self, model: nn.Module, split: str, desc: str = "", rows: Optional[np.ndarray] = None) -> torch.Tensor:
        """Eval-mode logits of ``split`` (all, or this rank's ``rows``), in index order.

        A rank with no rows (a split of fewer batches than ranks) gets an empty (0, classes) block, not a
        pass: the gathers after it take their shape from every rank's part.
        """
        if rows is not None and len(rows) == 0:
            return torch.zeros(0, self.num_classes)
        c, images = self.cfg, self.decoded(split)
        if images is not None:
            return decoded_logits(model, images, normalize(self.backbone.preprocess), device=self.device,
                                  batch_size=c.batch_size, precision=c.precision)
        return image_logits(model, getattr(self, split), self.eval_tf(), device=self.device, batch_size=c.batch_size,
                            num_workers=c.num_workers, desc=desc or f"eval:{split}", progress=c.progress, indices=rows,
                            precision=c.precision)

    def image_logits(self, model: nn.Module, split: str, desc: str = "") -> Optional[torch.Tensor]:
        """Eval-mode logits of the whole model on every image of ``split``, in index order.

        Data-parallel: each rank evaluates its rows and rank 0 receives them all (None on the other ranks).
        """
        if dist.world_size() <= 1:
            return self._logits(model, split, desc)
        rows = self.eval_rows(split)
        local = self._logits(model, split, desc, rows)
        full = dist.gather_by_index(local.numpy(), rows, len(getattr(self, split)), dst=0)
        return None if full is None else torch.from_numpy(full)

    def image_losses(self, model: nn.Module, split: str, desc: str = "") -> Optional[np.ndarray]:
        """Per-sample CE of the given labels of ``split`` (eval mode, index order): one float per sample.

        Data-parallel: each rank computes its rows' losses and rank 0 gathers them, not the logits
        (None on the other ranks).
        """
        labels = getattr(self, split).labels
        if dist.world_size() <= 1:
            return per_sample_ce(self._logits(model, split, desc), torch.as_tensor(labels)).numpy()
        rows = self.eval_rows(split)
        local = per_sample_ce(self._logits(model, split, desc, rows), torch.as_tensor(labels[rows])).numpy()
        return dist.gather_by_index(local, rows, len(labels), dst=0)

    def _predictions(self, model: nn.Module, split: str, probs: bool = False) -> np.ndarray:
        """The whole model's predicted class (``probs``: class distribution, float32) for every sample of ``split``,
        in index order (every rank gets them)."""
        def out(logits: torch.Tensor) -> np.ndarray:
            return logits.float().softmax(1).numpy() if probs else np.asarray(logits.argmax(1), dtype=np.int64)

        if dist.world_size() <= 1:
            return out(self._logits(model, split))
        rows = self.eval_rows(split)
        pred = out(self._logits(model, split, rows=rows))
        return dist.broadcast_object(dist.gather_by_index(pred, rows, len(getattr(self, split)), dst=0))

    def log_epoch(self, phase: str, epoch: int, *, head: Optional[nn.Linear] = None, model: Optional[nn.Module] = None,
                  after_eval: Optional[Callable[[], dict]] = None, **values) -> dict:
        """Evaluate on test (and val) with the head on cached features or the whole model on images; log a record.

        The validation split's predicted classes stay in :attr:`val_predictions` and its class distributions in
        :attr:`val_probs` (None without a split), so a method can compare its epochs sample by sample on validation
        (``consensus``'s delivery rule does) or weigh its own parts by them; ``after_eval`` (called once both
        exist) returns more values for the record. When the split's true labels are known (injected noise),
        ``val_true_acc`` is logged beside ``val_acc`` as a diagnostic that no rule reads.
        """
        rec = {"phase": phase, "epoch": epoch, **values}
        self.val_predictions = self.val_probs = None
        for split in ("val", "test"):
            data = getattr(self, split)
            if data is None:
                continue
            if head is not None:
                logits = head_logits(head, self.features(split), self.device).float()
                probs = logits.softmax(1).numpy() if split == "val" else None
                pred = np.asarray(logits.argmax(1), dtype=np.int64)
            else:
                with self.run.phase("evaluation"):  # the split's class distributions, the test's classes only
                    probs = self._predictions(model, split, probs=True) if split == "val" else None
                    pred = self._predictions(model, split) if split == "test" else probs.argmax(1).astype(np.int64)
            if split == "test":
                rec["test_acc"] = hit_rate(pred, data.true_labels if data.true_labels is not None else data.labels)
                continue
            self.val_predictions, self.val_probs = pred, probs
            rec["val_acc"] = hit_rate(pred, data.labels)
            if data.true_labels is not None:
                rec["val_true_acc"] = hit_rate(pred, data.true_labels)
        if after_eval is not None:
            rec.update(after_eval())
        self.run.log("metrics", rec)
        return rec

    def fine_tune_epoch(self, model: nn.Module, indices, loss_fn: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                        epochs: int, *, tag: str = "fft", states: Optional[dict] = None, **values) -> float:
        """One epoch of full fine-tuning on ``indices`` with augmentation: timed, logged, then checkpointed.

        ``states`` are the objects the checkpoint keeps (default: model and optimiser).
        """
        c = self.cfg
        with self.run.phase("fft"):
            loss = train_image_epoch(model, self.train, indices, self.train_tf(), loss_fn, opt, device=self.device,
                                     gen=generator(c.seed, 4, epoch), epoch=epoch, batch_size=c.batch_size,
                                     num_workers=c.num_workers, desc=f"{tag} {epoch}/{epochs}", progress=c.progress,
                                     freeze_bn_stats=c.freeze_bn_stats, precision=c.precision)
        self.log_epoch("fft", epoch, model=model, train_loss=loss, n_train=int(len(indices)), **values)
        self.checkpoint(tag, epoch, **(states or {"model": model, "opt": opt}))
        return loss

    def log_selection(self, epoch: int, selected: np.ndarray, **stats) -> dict:
        """Record a selection step; precision/recall/F1 when true labels are known."""
        rec = {"epoch": epoch, "selected": int(len(selected)), **stats}
        if self.train.true_labels is not None:
            rec.update(selection_metrics(selected, self.train.labels, self.train.true_labels))
        self.run.log("selection", rec)
        return rec


# what label_quality / is_label_issue mean for the methods that leave both to the report's default
GMM_LABEL_QUALITY = ("label_quality: posterior of the low-loss component of the per-class 2-component GMM on the "
                     "final model's CE losses; is_label_issue: label_quality ≤ τ (--tau, 0.6)")


def label_quality_doc(text: str):
    """Decorator: what ``label_quality`` and ``is_label_issue`` mean for a method, one uniform line.

    ``text`` reads ``label_quality: …; is_label_issue: …``; it becomes the function's ``LABEL_QUALITY``
    attribute (``noisyft methods`` prints it) and the last paragraph of its docstring.
    """
    if not text.startswith("label_quality: ") or "; is_label_issue: " not in text:
        raise ValueError(f"a label-quality line reads 'label_quality: ...; is_label_issue: ...', got {text!r}")

    def deco(fn):
        fn.LABEL_QUALITY = text
        fn.__doc__ = f"{(fn.__doc__ or '').rstrip()}\n\n{text}"
        return fn

    return deco

