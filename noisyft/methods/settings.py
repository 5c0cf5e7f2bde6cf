"""Typed method settings: each method registers a frozen dataclass of its options with its name.

``METHODS.register("elr-lp", settings=ELRSettings)``; ``--extra KEY=VALUE`` (and
``extra:`` in config files and bench grids) set its fields. :func:`validate_config`
(what ``fit`` calls before loading anything) refuses unknown keys with "did you
mean", checks each value's type and range, and refuses keys that used to set
something that now has one home (:data:`MOVED`). At run time
``ctx.settings`` is the resolved instance: the user's values over the defaults
that depend on the data or on other settings (:func:`dataset_defaults`, the one
place such defaults live) over the field defaults.

The fine-tuning budget is not a method setting: ``epochs_fft`` (``--epochs-fft``)
applies to every method that fine-tunes the whole model; when it is not given,
each method's own default (:attr:`MethodSettings.EPOCHS_FFT`: TURN 4, the ``-fft``
baselines 5 as in the TURN paper, DEFT 10 or 5 for real noise) applies.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

from noisyft.backbones.clip import is_clip_name
from noisyft.config import FitConfig, option_label
from noisyft.data.cifar100 import FINE_CLASSES
from noisyft.data.noise import parse_noise
from noisyft.data.transforms import AUGMENTATIONS
from noisyft.errors import UserError
from noisyft.options import check_fields, describe, did_you_mean, shown
from noisyft.methods.registry import METHODS


@dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings. ``EPOCHS_FFT``: full fine-tuning epochs when ``--epochs-fft`` is not given
    (None: the method does not fine-tune the whole model)."""

    EPOCHS_FFT: ClassVar[Optional[int]] = None

    def epochs_fft_default(self) -> Optional[int]:
        """The method's own fine-tuning budget (a method whose default depends on a setting overrides this)."""
        return self.EPOCHS_FFT

    def check(self) -> None:
        """Checks across fields or beyond a field's range (override; raise a one-line UserError)."""


@dataclass(frozen=True)
class NoSettings(MethodSettings):
    """A method without settings of its own."""


# Ways of setting something that now has one home: refused with the new way instead of being ignored.
MOVED = {
    "q": "GCE's q is the top-level option --gce-q (gce_q: in a config file), shared by turn, gce-lp and gce-fft",
    "baseline_fft_epochs": "the fine-tuning budget is --epochs-fft (epochs_fft: in a config file), honoured by every "
                           "method that fine-tunes",
    "adapt_epochs": "DEFT's phase-2 fine-tuning epochs are --epochs-fft (epochs_fft: in a config file)",
}


def settings_class(method: str) -> type:
    """The settings dataclass of ``method`` (:class:`NoSettings` when it registered none)."""
    return METHODS.settings(method) or NoSettings


def extra_label(sources: Optional[Mapping[str, str]] = None) -> Callable[[str], str]:
    """How messages name an extra key: ``--extra warmup=`` or ``--config FILE: extra.warmup=``."""
    def label(key: str) -> str:
        src = (sources or {}).get(f"extra.{key}")
        return f"{src}: extra.{key}=" if src else f"--extra {key}="

    return label


def check_extra(method: str, extra: Mapping[str, Any], sources: Optional[Mapping[str, str]] = None) -> dict:
    """``extra`` checked against ``method``'s settings: known keys only, each value of its field's type and range."""
    cls, label = settings_class(method), extra_label(sources)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in extra.items():
        if key in known:
            continue
        where = label(key).rstrip("=")
        if key in MOVED:
            raise UserError(f"{where}: not a method setting any more; {MOVED[key]}")
        if not known:
            raise UserError(f"{where}: method {method} has no settings of its own (`noisyft methods -v` lists each method's)")
        raise UserError(f"{where}: not a setting of method {method}{did_you_mean(key, known)}; "
                        f"its settings: {', '.join(known)}")
    values = check_fields(cls, dict(extra), label)
    cls(**values).check()
    return values


def validate_config(cfg: FitConfig, sources: Optional[Mapping[str, str]] = None) -> FitConfig:
    """Every option of ``cfg`` checked before any work: :meth:`FitConfig.validate` plus what needs the layers
    above the config (noise syntax, augmentation, method name, the method's ``extra`` settings).

    Returns the checked config (``extra`` values in their declared types). ``sources`` names where values came
    from (``{"tau": "--config c.yaml", "extra.warmup": ...}``) for the messages.
    """
    cfg = cfg.validate(sources)
    label = option_label(sources)
    if cfg.noise is not None:
        try:
            parse_noise(cfg.noise)
        except UserError as e:  # parse_noise's message starts "noise '<text>': …"
            src = (sources or {}).get("noise")
            raise UserError(f"{src}: {e}" if src else f"--{e}") from None
    if cfg.augment not in AUGMENTATIONS:
        raise UserError(f"{shown(label('augment'), cfg.augment)}: choose from {', '.join(AUGMENTATIONS)}")
    METHODS.get(cfg.method)
    return dataclasses.replace(cfg, extra=check_extra(cfg.method, cfg.extra, sources))


# --- defaults that depend on the data or on other settings: the one place -----------------------


def _is_cifar100(data: str, classes: Sequence[str]) -> bool:
    """CIFAR-100 by dataset name (``cifar100[:PATH]``) or by its 100 fine class names (a folder/zip export of it)."""
    if data.split(":", 1)[0].strip().lower() == "cifar100":
        return True
    return len(classes) == 100 and sorted(c.lower().replace(" ", "_") for c in classes) == sorted(FINE_CLASSES)


def dataset_defaults(method: str, cfg: FitConfig, classes: Sequence[str] = (), given: Mapping[str, Any] = {}) -> dict:
    """Defaults of ``method``'s settings that depend on the data, the noise or other settings (``given``).

    - ELR (elr-lp, elr-fft): β 0.9, λ 7 on CIFAR-100 (ELR paper; β 0.7, λ 3 elsewhere, the field defaults).
    - DivideMix: λ_u 150 when the injected noise rate is ≥ 0.5 (else 25); p_threshold 0.6 at a rate ≥ 0.9 (else 0.5).
    - DEFT / clip-label-match: the CLIP is the backbone when that is a CLIP; warm-up 5 for real noise (else 1).
    """
    if method.startswith("elr-"):
        return {"beta": 0.9, "lam": 7.0} if _is_cifar100(cfg.data, classes) else {}
    if method.startswith("dividemix"):
        rate = parse_noise(cfg.noise).rate if cfg.noise else None  # the one noise parser (data.noise)
        return {"lambda_u": 150.0 if rate is not None and rate >= 0.5 else 25.0,
                "p_threshold": 0.6 if rate is not None and rate >= 0.9 else 0.5}
    if method in ("deft", "clip-label-match"):
        out: dict = {"warmup": 5 if given.get("real_noise") else 1}
        if is_clip_name(cfg.backbone):
            out["clip"] = cfg.backbone.removeprefix("hf:")
        return out
    return {}


def resolve_settings(cfg: FitConfig, classes: Sequence[str] = (), method: Optional[str] = None) -> MethodSettings:
    """The settings of ``method`` (default ``cfg.method``) for this run: ``--extra`` values over
    :func:`dataset_defaults` over field defaults."""
    method = method or cfg.method
    given = check_extra(method, cfg.extra or {})
    cls = settings_class(method)
    names = {f.name for f in dataclasses.fields(cls)}
    defaults = {k: v for k, v in dataset_defaults(method, cfg, classes, given).items() if k in names}
    s = cls(**{**defaults, **given})
    s.check()
    return s


def describe_method(name: str) -> list[str]:
    """``noisyft methods -v`` lines for one method: its fine-tuning budget and each setting with default and help."""
    cls = settings_class(name)
    lines = []
    if cls.EPOCHS_FFT is not None:
        lines.append(f"full fine-tuning: {cls.EPOCHS_FFT} epochs unless --epochs-fft is given")
    rows = describe(cls)
    if not rows:
        lines.append("no settings of its own")
    for key, tp, default, help_ in rows:
        text = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines.append(f"--extra {key}={text} ({tp}): {help_}")
    return lines
