"""The backbone contract: a frozen-or-trainable feature extractor that knows its
feature size, its preprocessing and its paper-style optimiser defaults."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from noisyft.config import OptimConfig
from noisyft.data.transforms import Preprocess

# Table 8 of the TURN paper; CNNs without a row use ResNet-50's settings. EfficientNet
# (not in the paper) takes ResNet-50's LP row and ConvNeXt's FFT row: AdamW at 1e-3
# wrecks it in one fine-tuning step (CE on clean samples 1.0 → 5.5, measured on the demo
# training data), at 1e-4 it improves noisy-validation accuracy (benchmarks/README.md).
PAPER_HPARAMS: dict[str, tuple[OptimConfig, OptimConfig]] = {
    "vit": (OptimConfig("sgd", 1e-2, 1e-3), OptimConfig("sgd", 1e-2, 1e-5)),
    "convnext": (OptimConfig("sgd", 1e-1, 1e-4), OptimConfig("adamw", 1e-4, 1e-4)),
    "mae": (OptimConfig("adamw", 1e-2, 1e-5), OptimConfig("adamw", 1e-4, 1e-3)),
    "msn": (OptimConfig("sgd", 1e-2, 1e-2), OptimConfig("sgd", 1e-3, 1e-5)),
    "clip": (OptimConfig("adamw", 1e-3, 1e-6), OptimConfig("adamw", 1e-5, 1e-5)),
    "resnet": (OptimConfig("adamw", 1e-3, 1e-5), OptimConfig("adamw", 1e-3, 1e-5)),
    "efficientnet": (OptimConfig("adamw", 1e-3, 1e-5), OptimConfig("adamw", 1e-4, 1e-4)),
}


def state_digest(model: nn.Module) -> str:
    """A digest of every weight: random initialisations (which depend on the seed) get distinct cache keys."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Backbone(nn.Module):
    """Wraps a model so that ``forward(images) -> (B, num_features)`` pooled features.

    ``name`` and ``weights_id`` identify the weights for the feature cache;
    ``family`` picks the paper's default optimiser settings (PAPER_HPARAMS).
    """

    def __init__(self, model: nn.Module, *, name: str, weights_id: str, preprocess: Preprocess,
                 family: str = "resnet", num_features: int | None = None):
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id + ":" + state_digest(model) if weights_id.endswith(":random") else weights_id
        self.preprocess = preprocess
        self.family = family
        self.num_features = num_features if num_features is not None else self._probe_features()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of a batch; subclasses of the wrapped family override via ``pool``."""
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @torch.no_grad()
    def _probe_features(self) -> int:
        was = self.training
        self.eval()
        out = self.features(torch.zeros(1, 3, self.preprocess.size, self.preprocess.size))
        self.train(was)
        return int(out.shape[-1])

    @property
    def hparams(self) -> tuple[OptimConfig, OptimConfig]:
        """(LP, FFT) optimiser defaults for this backbone family."""
        return PAPER_HPARAMS.get(self.family, PAPER_HPARAMS["resnet"])


class Classifier(nn.Module):
    """Backbone plus a linear head: g(f(x)). The head is what linear probing trains."""

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
