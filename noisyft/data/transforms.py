"""Image → tensor pipelines: the backbone's eval preprocessing and the training augmentations.

Eval: resize the shorter side to the backbone's size, centre-crop, normalise with
the backbone's mean/std (this is also what the feature cache stores). Training adds
the TURN paper's augmentation: CIFAR-style ``flip → affine`` by default, or
``crop`` (random resized crop → flip → colour jitter, as for Clothing1M/WebVision).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

AUGMENTATIONS = ("flip-affine", "crop", "none")


@dataclass(frozen=True)
class Preprocess:
    """How images are turned into tensors for this backbone (part of the feature-cache key)."""

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def with_size(self, size: int | None) -> "Preprocess":
        return self if not size else Preprocess(size, self.mean, self.std, self.interpolation)

    def to_dict(self) -> dict:
        return asdict(self)


def _interp(name: str) -> InterpolationMode:
    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
            "nearest": InterpolationMode.NEAREST}.get(name, InterpolationMode.BICUBIC)


def _to_tensor(pre: Preprocess) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


_PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


class EvalResize:
    """PIL image → uint8 CHW tensor: shorter side resized to ``size``, centre crop of ``size`` × ``size``.

    Pixel for pixel what ``T.Resize(size) → T.CenterCrop(size) → T.ToImage()`` gives on a PIL
    image (the same PIL ``resize`` call, torchvision's output size and crop offsets; tested), in
    one step: torchvision's per-transform dispatch cost more than the resize itself for small
    images, and it runs once per image in the decoding workers.
    """

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size, self.resample = size, _PIL_RESAMPLE.get(interpolation, Image.BICUBIC)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.array(im)).permute(2, 0, 1)

    def array(self, im: Image.Image) -> np.ndarray:
        """The same pixels as an HWC uint8 numpy array (numpy only: no torch threads, so it suits a decoding thread)."""
        s, (w, h) = self.size, im.size
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), self.resample)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        if (left, top, nw, nh) != (0, 0, s, s):
            im = im.crop((left, top, left + s, top + s))
        return np.array(im, dtype=np.uint8).reshape(s, s, -1)


def eval_resize(pre: Preprocess) -> T.Compose:
    """The geometric half of :func:`eval_transform`: PIL image → uint8 tensor at the backbone's size.

    PIL resizes in uint8, so keeping this output loses nothing: :func:`normalize` of it gives
    exactly :func:`eval_transform`'s tensor (what the in-memory eval images rely on, and what
    feature extraction does: workers send uint8 images, the main process normalises whole batches).
    """
    return T.Compose([EvalResize(pre.size, pre.interpolation)])


def normalize(pre: Preprocess) -> T.Compose:
    """uint8 image tensor(s) → float32 scaled to [0, 1] and normalised with the backbone's mean/std."""
    return T.Compose(_to_tensor(pre)[1:])


def eval_transform(pre: Preprocess) -> T.Compose:
    """Deterministic preprocessing used for feature extraction, selection and testing."""
    return T.Compose([*eval_resize(pre).transforms, *normalize(pre).transforms])


def train_transform(pre: Preprocess, augment: str = "flip-affine") -> T.Compose:
    """Preprocessing plus augmentation for full fine-tuning."""
    interp = _interp(pre.interpolation)
    if augment == "none":
        return eval_transform(pre)
    if augment == "crop":
        aug = [T.RandomResizedCrop(pre.size, interpolation=interp, antialias=True), T.RandomHorizontalFlip(),
               T.ColorJitter(0.4, 0.4, 0.4)]
        return T.Compose([*aug, *_to_tensor(pre)])
    if augment == "flip-affine":
        aug = [T.Resize(pre.size, interpolation=interp, antialias=True), T.CenterCrop(pre.size),
               T.RandomHorizontalFlip(), T.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1))]
        return T.Compose([*aug, *_to_tensor(pre)])
    raise ValueError(f"unknown augmentation {augment!r} (choose from {', '.join(AUGMENTATIONS)})")
