"""What every data source provides: images by index, stable ids, a content key.

A *source* knows how to open image ``i`` and what it is called; a
:class:`LabeledSet` adds the given (possibly wrong) labels, the class names and,
when known, the true labels. Methods and the feature cache only ever see these
two types, so a new source (folder, zip, arrays, a named dataset) is one class.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image


class ImageSource:
    """Random access to ``len(self)`` RGB images with stable string ids.

    Subclasses set ``self.ids`` (one string per image: a relative path, a zip
    member, or an index) and implement :meth:`load` and :meth:`fingerprint`.
    Sources must be picklable and must open file handles lazily (per process),
    because DataLoader workers receive a copy.
    """

    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:
        """Return image ``i`` as a PIL RGB image; raise UserError naming the file if unreadable."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hex digest that changes whenever any image's content (or order) changes."""
        raise NotImplementedError

    def raw(self, i: int) -> np.ndarray:
        """Image ``i`` as a uint8 HxWxC array, the same pixels as :meth:`load` (feature extraction and
        instance-dependent noise read this; sources override it where they can skip the PIL image)."""
        return np.asarray(self.load(i), dtype=np.uint8)


class SubsetSource(ImageSource):
    """The images of ``parent`` at ``indices``, in that order."""

    def __init__(self, parent: ImageSource, indices: Sequence[int]):
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        self.ids = [parent.ids[i] for i in self.indices]

    def load(self, i: int) -> Image.Image:
        return self.parent.load(int(self.indices[i]))

    def raw(self, i: int) -> np.ndarray:
        return self.parent.raw(int(self.indices[i]))

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.parent.fingerprint().encode())
        h.update(self.indices.tobytes())
        return h.hexdigest()


@dataclass
class LabeledSet:
    """Images plus given labels (what training sees) and optional true labels."""

    source: ImageSource
    labels: np.ndarray
    classes: list[str]
    true_labels: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.true_labels is not None:
            self.true_labels = np.asarray(self.true_labels, dtype=np.int64)
        if len(self.labels) != len(self.source):
            raise ValueError(f"{len(self.labels)} labels for {len(self.source)} images")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ids(self) -> list[str]:
        return self.source.ids

    def subset(self, indices: Sequence[int]) -> "LabeledSet":
        idx = np.asarray(indices, dtype=np.int64)
        true = None if self.true_labels is None else self.true_labels[idx]
        return LabeledSet(SubsetSource(self.source, idx), self.labels[idx], self.classes, true)

    def with_labels(self, labels: np.ndarray, true_labels: Optional[np.ndarray] = None) -> "LabeledSet":
        """The same images with new given labels (e.g. after noise injection)."""
        return LabeledSet(self.source, labels, self.classes, self.true_labels if true_labels is None else true_labels)


@dataclass
class DataSplits:
    """A training set and an optional test set that share the class list.

    ``val``: the dataset's own (clean) validation set when the reader was asked for it (Clothing1M's
    ``?val=clean``), used instead of carving one from the noisy training data. ``extra_tests``: further
    test sets by name (WebVision's ILSVRC2012 validation images: ``imagenet``), reported as
    ``test_acc_<name>`` of the delivered model.
    """

    train: LabeledSet
    test: Optional[LabeledSet] = None
    name: str = "data"
    info: dict = field(default_factory=dict)
    val: Optional[LabeledSet] = None
    extra_tests: dict[str, LabeledSet] = field(default_factory=dict)


class TorchImageDataset(torch.utils.data.Dataset):
    """The one indexed-image Dataset for a DataLoader: yields ``(image_tensor, given_label, index)``.

    ``data`` is a LabeledSet, or an ImageSource (unlabelled images, e.g. for feature
    extraction: the label is then -1). ``index`` is the position in ``data``, which
    selection and the label-issue report use to identify a sample (never the batch row order).
    """

    def __init__(self, data: LabeledSet | ImageSource, transform: Optional[Callable],
                 indices: Optional[Sequence[int]] = None):
        self.source = data.source if isinstance(data, LabeledSet) else data
        self.labels = data.labels if isinstance(data, LabeledSet) else None
        self.transform = transform
        self.indices = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = int(self.indices[k])
        return self.transform(self.source.load(i)), -1 if self.labels is None else int(self.labels[i]), i
