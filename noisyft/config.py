"""The one configuration of a run: a plain dataclass, printed, saved, hashed.

CLI long options and config-file keys are these field names (with ``-`` for
``_``). The hash of the fields that change results names the default run
directory, so running the same command again resumes the same run. Each
field carries its help text (the CLI's ``--help`` is built from it) and its
allowed values; :meth:`FitConfig.validate` checks them all.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

from noisyft.errors import UserError
from noisyft.options import FRACTION, NON_NEGATIVE, POSITIVE, SEED, UNIT_OPEN, Range, check_fields, did_you_mean, option

# Fields that do not change a run's numbers (excluded from its identity).
NON_RESULT_FIELDS = {"out", "progress", "num_workers", "cache_dir", "device", "image_cache_mb"}


@dataclass(frozen=True)
class OptimConfig:
    """One optimiser setting (the TURN paper's Table 8 lists one per backbone and phase)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9

    def build(self, params) -> torch.optim.Optimizer:
        """The optimiser over ``params``; Adam/AdamW use the fused CUDA kernel when every parameter is on CUDA
        (one kernel per step instead of one per tensor; CPU runs are unchanged)."""
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        params = list(params)
        fused = {"fused": True} if fused_ok(params) else {}
        if self.name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, **fused)
        if self.name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, **fused)
        raise ValueError(f"unknown optimiser {self.name!r} (sgd, adam, adamw)")


def fused_ok(params) -> bool:
    """Whether the fused Adam(W) kernel applies: every tensor (or param group's tensors) on CUDA, floating point."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(t.is_cuda and t.is_floating_point() for t in tensors)


@dataclass
class FitConfig:
    """Everything a ``fit`` needs; defaults are the TURN paper's where it gives one.

    Each field's help text (shown by ``noisyft fit --help``) and allowed values live
    on the field; :meth:`validate` checks them all.
    """

    data: str = option("demo", "training images: a folder or .zip tree (root/<class>/<file>, optional train/ and test/), "
                       "or a dataset: demo, cifar10:PATH, cifar100:PATH, fashion-mnist[:PATH], clothing1m:PATH, "
                       "webvision:PATH (mini), webvision-full:PATH, tiny-imagenet:PATH, cub200:PATH, stanford-cars:PATH, "
                       "hf:DIR_OR_HUB_ID[:SPLIT][?image=COL&label=COL&test=SPLIT] (Hugging Face datasets), "
                       "wds:'SHARDS-{000..099}.tar'[?test=PATTERN] (WebDataset tar shards)")
    labels: Optional[str] = option(None, "CSV with columns path,label giving the (possibly wrong) labels; overrides folder labels; "
                                   "or CIFAR-N human labels: cifar10n:KIND:FILE (aggre, worse, random1-3), cifar100n:noisy:FILE")
    test: Optional[str] = option(None, "separate test tree (folder or zip)")
    test_fraction: float = option(0.2, "share of the training data held out as test set when the data has none "
                                  "(0 = no test set)", range=FRACTION)
    val_fraction: float = option(0.0, "share of the (noisy) training data held out for model selection; the report says "
                                 "which epoch it picks", range=FRACTION)
    noise: Optional[str] = option(None, "inject label noise into the training labels: sym:R (uniform, may redraw the true "
                                  "class), symflip:R (never the true class), asym:R (CIFAR-10/100 maps), asym-block:R, "
                                  "inst:R (CORES), inst-ptd:R")
    method: str = option("consensus", "method name (see `noisyft methods -v` for each method's settings); the default is the "
                         "best across the committed benchmark settings (README: Defaults)")
    backbone: str = option("efficientnet_lite0", "efficientnet_lite0 (offline default), any timm name, or hf:<hub id or local dir>")
    allow_remote_code: bool = option(False, "allow Hugging Face models that ship their own Python code (trust_remote_code); "
                                     "off by default")
    pretrained: bool = option(True, "start from pretrained weights (--no-pretrained: random initialisation)")
    image_size: Optional[int] = option(None, "input resolution (default: the backbone's own)", range=POSITIVE)
    epochs_lp: int = option(20, "linear-probing epochs (E_LP)", range=NON_NEGATIVE)
    epochs_fft: Optional[int] = option(None, "full fine-tuning epochs (E_FFT) of every method that fine-tunes; default: "
                                       "the method's own (TURN 4, -fft baselines 5, DEFT 10; `noisyft methods -v`)",
                                       range=NON_NEGATIVE)
    tau: float = option(0.6, "GMM clean-posterior threshold", range=UNIT_OPEN)
    gce_q: float = option(0.7, "q of the GCE loss (TURN's linear probing, gce-lp, gce-fft)", range=Range(0, 1, low_open=True))
    batch_size: int = option(128, "batch size", range=POSITIVE)
    lp_optim: Optional[str] = option(None, "linear-probing optimiser name:lr:weight_decay, e.g. adamw:1e-3:1e-5 "
                                     "(default: the backbone's paper setting)")
    fft_optim: Optional[str] = option(None, "fine-tuning optimiser name:lr:weight_decay (default: the backbone's paper setting)")
    augment: str = option("flip-affine", "flip-affine (CIFAR), crop (web photos) or none")
    freeze_bn_stats: bool = option(True, "keep BatchNorm running statistics as pretrained during fine-tuning (the LP "
                                   "head was fitted to them)")
    max_train: Optional[int] = option(None, "use a class-balanced subset of this many training images", range=POSITIVE)
    max_test: Optional[int] = option(None, "likewise for the test set", range=POSITIVE)
    skip_bad_images: bool = option(False, "skip images that cannot be decoded (listed in data.json) instead of failing")
    folder_labels_are_true: bool = option(False, "with --labels: the folder names are true labels (enables precision/recall)")
    seed: int = option(0, "seed for noise, splits, subsampling, data order and initialisation", range=SEED)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = option("auto", "auto, bf16 or fp32: bf16 autocast for extraction, eval passes and fine-tuning on CUDA "
                            "(auto = bf16 on CUDA, fp32 elsewhere; the CPU always computes in fp32)",
                            choices=("auto", "bf16", "fp32"))
    num_workers: Optional[int] = option(None, "image decoding workers (default: cores - 1; feature extraction on 2 cores: a decoding thread)", range=NON_NEGATIVE)
    cache_dir: Optional[str] = option(None, "feature cache (default $NOISYFT_CACHE or ~/.cache/noisyft)")
    image_cache_mb: int = option(2048, "memory (MiB) for decoded eval images, so per-epoch selection/evaluation passes "
                                 "skip decoding (0: off)", range=NON_NEGATIVE)
    out: Optional[str] = option(None, "run directory (default runs/<method>-<config hash>; rerunning resumes it)")
    progress: bool = option(True, "show progress bars")
    extra: dict = option(help="method-specific setting KEY=VALUE (repeatable; `noisyft methods -v` lists them)",
                         default_factory=dict)

    def identity(self) -> dict:
        """The fields that determine the results (what a resumed run must match).

        ``precision`` counts only when set (``auto``, the default, is left out so that runs
        made before the option existed keep their identity and default folder).
        """
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in NON_RESULT_FIELDS and not (k == "precision" and v == "auto")}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    def run_dir(self) -> str:
        return self.out or f"runs/{self.method}-{self.digest()}"

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(k + did_you_mean(k, names) for k in unknown)}")
        return cls(**d)

    def validate(self, sources: Optional[Mapping[str, str]] = None) -> "FitConfig":
        """This config with every value checked (type, range, syntax, path kind); a one-line UserError otherwise.

        Checks what needs no data, model or method: :func:`noisyft.methods.validate_config` adds the
        noise spec, augmentation, method name and ``extra`` settings and is what ``fit`` calls.
        ``sources`` maps a field name to where its value came from (e.g. ``--config FILE``) for the
        messages; unnamed fields are shown as command-line options (``--tau``). Returns a copy with
        whole-number floats as ints (``epochs_lp: 5.0``) so equal settings give equal run identities.
        """
        label = option_label(sources)
        cfg = FitConfig(**check_fields(FitConfig, dataclasses.asdict(self), label))
        for name in ("lp_optim", "fft_optim"):
            parse_optim(getattr(cfg, name), OptimConfig(), label(name))
        check_device(cfg.device, label("device"))
        if cfg.labels is not None and Path(cfg.labels).is_dir():
            raise UserError(f"{label('labels')} {cfg.labels}: is a folder; give the CSV file of path,label rows")
        for name in ("out", "cache_dir"):
            path = getattr(cfg, name)
            if path is not None and Path(path).exists() and not Path(path).is_dir():
                raise UserError(f"{label(name)} {path}: is a file; give a folder (it is created if missing)")
        return cfg


def option_label(sources: Optional[Mapping[str, str]] = None) -> Callable[[str], str]:
    """How messages name a field: ``--tau`` (command line / Python), ``--config FILE: tau`` (from a file)."""
    def label(name: str) -> str:
        src = (sources or {}).get(name)
        return f"{src}: {name}" if src else "--" + name.replace("_", "-")

    return label


def check_device(name: str, label: str = "--device") -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and the device must exist here."""
    if name == "auto":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{label} {name}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{label} {name}: no CUDA device is available here; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{label} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{label} {name}: no Apple MPS device is available here; use cpu or auto")
    elif dev.type != "cpu":
        raise UserError(f"{label} {name}: expected auto, cpu, cuda, cuda:N or mps")


def read_mapping(path: str | Path, label: str) -> dict:
    """A YAML (or JSON) file holding one mapping; errors name ``label`` (the option or file role)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{label} {path}: file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{label} {path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{label} {path}: expected a mapping of key: value")
    return data


def parse_optim(text: Optional[str], default: OptimConfig, option: str) -> OptimConfig:
    """``name:lr:weight_decay`` (e.g. ``sgd:0.01:1e-5``) → OptimConfig; None keeps the default.

    ``option`` names the setting in errors (``lp-optim`` or a full label such as ``--config F: lp_optim``).
    The learning rate must be positive and finite, the weight decay finite and 0 or more.
    """
    if not text:
        return default
    label = option if option.startswith("-") or " " in option else f"--{option}"
    usage = "expected name:lr:weight_decay, e.g. adamw:1e-3:1e-5"
    parts = text.split(":")
    if len(parts) > 3:
        raise UserError(f"{label} {text}: {usage}")
    try:
        name = parts[0]
        lr = float(parts[1]) if len(parts) > 1 else default.lr
        wd = float(parts[2]) if len(parts) > 2 else default.weight_decay
    except ValueError:
        raise UserError(f"{label} {text}: {usage}") from None
    if name not in ("sgd", "adam", "adamw"):
        raise UserError(f"{label} {text}: optimiser must be sgd, adam or adamw")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"{label} {text}: the learning rate must be a positive finite number")
    if not (math.isfinite(wd) and wd >= 0):
        raise UserError(f"{label} {text}: the weight decay must be a finite number >= 0")
    return OptimConfig(name, lr, wd)
