"""Image → tensor pipelines: the backbone's eval preprocessing and the training augmentations.

Eval: resize the shorter side to the backbone's size, centre-crop, normalise with
the backbone's mean/std (this is also what the feature cache stores). Training adds
the TURN paper's augmentation: CIFAR-style ``flip → affine`` by default, or
``crop`` (random resized crop → flip → colour jitter, as for Clothing1M/WebVision).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
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
    """Image → uint8 at the backbone's size: shorter side resized to ``size``, centre crop of ``size`` × ``size``.

    Bicubic and bilinear use torch's antialiased uint8 kernel (``F.interpolate(..., antialias=True)``,
    what torchvision's ``Resize`` computes on a uint8 tensor), with torchvision's output size and crop
    offsets; ``nearest`` uses PIL (torch's nearest rounds differently). Pixels are within 2 levels of
    PIL's resize (on 512 real CIFAR-10 images, identical at 64 and 96 px; 0.01 % / 0.07 % of pixels
    differ at 128 / 224 px); the feature cache's format version names the change.
    :meth:`batch` resizes a whole batch of same-sized images in one call, exactly as one by one:
    feature extraction decodes in a background thread and resizes batches in the main thread, where
    the work is a few percent of the forward pass instead of a per-image PIL call competing for the
    cores (measured in ``benchmarks/results/extraction_speed.md``).
    """

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size, self.interpolation = size, interpolation
        self.resample = _PIL_RESAMPLE.get(interpolation, Image.BICUBIC)
        self.torch_mode = interpolation if interpolation in ("bicubic", "bilinear") else None

    def __call__(self, im) -> torch.Tensor:
        """One image (PIL or HWC uint8 array) → CHW uint8 tensor."""
        return self.batch([im])[0]

    def batch(self, images: Sequence) -> torch.Tensor:
        """Images (PIL or HWC uint8 arrays, any sizes) → (N, C, size, size) uint8, channels-last."""
        arrays = [hwc(im) for im in images]
        if self.torch_mode is None:
            out = torch.from_numpy(np.stack([self._pil(a) for a in arrays])).permute(0, 3, 1, 2)
            return out.contiguous(memory_format=torch.channels_last)
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            return self._resize(arrays)
        out = torch.empty(len(arrays), arrays[0].shape[2], self.size, self.size, dtype=torch.uint8)
        out = out.contiguous(memory_format=torch.channels_last)
        for shape in shapes:  # one call per input size: the same pixels as one image at a time
            rows = [i for i, a in enumerate(arrays) if a.shape == shape]
            out[rows] = self._resize([arrays[i] for i in rows])
        return out

    def _geometry(self, w: int, h: int) -> tuple[int, int, int, int]:
        """(new width, new height, left, top): torchvision's ``Resize(size)`` then ``CenterCrop(size)``."""
        s = self.size
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        return nw, nh, int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))

    def _resize(self, arrays: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # channels-last strides, what the uint8 kernel wants
        h, w = x.shape[2:]
        nw, nh, left, top = self._geometry(w, h)
        if (nw, nh) != (w, h):
            x = F.interpolate(x, size=(nh, nw), mode=self.torch_mode, antialias=True)
        return x[:, :, top: top + self.size, left: left + self.size].contiguous(memory_format=torch.channels_last)

    def _pil(self, a: np.ndarray) -> np.ndarray:
        im = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
        nw, nh, left, top = self._geometry(*im.size)
        if (nw, nh) != im.size:
            im = im.resize((nw, nh), self.resample)
        if (left, top, nw, nh) != (0, 0, self.size, self.size):
            im = im.crop((left, top, left + self.size, top + self.size))
        return np.asarray(im, dtype=np.uint8).reshape(self.size, self.size, -1)


def hwc(im) -> np.ndarray:
    """A PIL image or array as an H×W×C uint8 array (grey images get one channel)."""
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def eval_resize(pre: Preprocess) -> T.Compose:
    """The geometric half of :func:`eval_transform`: PIL image → uint8 tensor at the backbone's size.

    The resize is in uint8, so keeping this output loses nothing: :func:`normalize` of it gives
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
