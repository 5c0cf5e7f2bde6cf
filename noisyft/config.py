"""The one configuration of a run: a plain dataclass, printed, saved, hashed.

CLI long options and config-file keys are these field names (with ``-`` for
``_``). The hash of the fields that change results names the default run
directory, so running the same command again resumes the same run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from noisyft.backbones.base import OptimConfig
from noisyft.errors import UserError

# Fields that do not change a run's numbers (excluded from its identity).
NON_RESULT_FIELDS = {"out", "progress", "num_workers", "cache_dir", "device", "image_cache_mb"}


@dataclass
class FitConfig:
    """Everything a ``fit`` needs; defaults are the TURN paper's where it gives one."""

    data: str = "demo"                     # folder, .zip, or dataset name[:path]
    labels: Optional[str] = None           # CSV path,label of the given (noisy) labels
    test: Optional[str] = None             # separate test tree (folder or zip)
    test_fraction: float = 0.2             # held-out test share when the data has no test split
    val_fraction: float = 0.0              # noisy validation share carved from train for model selection
    noise: Optional[str] = None            # inject noise: sym:0.6, symflip:0.5, asym:0.4, asym-block:0.4, inst:0.4, inst-ptd:0.4
    method: str = "turn"
    backbone: str = "efficientnet_lite0"
    allow_remote_code: bool = False        # let Hugging Face run model code from the hub (off: never)
    pretrained: bool = True                # False: random initialisation (tests, training from scratch)
    image_size: Optional[int] = None       # input resolution (backbone default when unset)
    epochs_lp: int = 20                    # E_LP
    epochs_fft: int = 4                    # E_FFT
    tau: float = 0.6                       # GMM clean-posterior threshold
    gce_q: float = 0.7
    batch_size: int = 128
    lp_optim: Optional[str] = None         # "adamw:1e-3:1e-5" (name:lr:weight_decay); backbone default when unset
    fft_optim: Optional[str] = None
    augment: str = "flip-affine"           # flip-affine (CIFAR) | crop (web data) | none
    freeze_bn_stats: bool = True           # keep BatchNorm running statistics as pretrained while fine-tuning
    max_train: Optional[int] = None        # class-balanced training subset (benchmarks)
    max_test: Optional[int] = None
    skip_bad_images: bool = False
    folder_labels_are_true: bool = False   # with --labels: the folder names are the true labels (for scoring)
    seed: int = 0
    device: str = "auto"
    num_workers: Optional[int] = None
    cache_dir: Optional[str] = None
    image_cache_mb: int = 2048             # memory for decoded eval images (repeated eval passes skip decoding; 0: off)
    out: Optional[str] = None              # run directory (default runs/<method>-<config hash>)
    progress: bool = True
    extra: dict = field(default_factory=dict)  # method-specific settings (e.g. {"keep_fraction": 0.5})

    def identity(self) -> dict:
        """The fields that determine the results (what a resumed run must match)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NON_RESULT_FIELDS}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    def run_dir(self) -> str:
        return self.out or f"runs/{self.method}-{self.digest()}"

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, names, 1)) else k for k in unknown]
            raise UserError(f"unknown config key(s): {', '.join(hints)}")
        return cls(**d)


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
    """``name:lr:weight_decay`` (e.g. ``sgd:0.01:1e-5``) → OptimConfig; None keeps the default."""
    if not text:
        return default
    parts = text.split(":")
    try:
        name = parts[0]
        lr = float(parts[1]) if len(parts) > 1 else default.lr
        wd = float(parts[2]) if len(parts) > 2 else default.weight_decay
    except ValueError:
        raise UserError(f"--{option} {text!r}: expected name:lr:weight_decay, e.g. adamw:1e-3:1e-5") from None
    if name not in ("sgd", "adam", "adamw"):
        raise UserError(f"--{option} {text!r}: optimiser must be sgd, adam or adamw")
    return OptimConfig(name, lr, wd)
