"""The data loader and the one eval-mode forward pass that feature extraction, evaluation and training share.

Kept apart from the feature cache so that the training loops (:mod:`noisyft.engine`, the
methods) take their loader from here and never depend on how features are cached.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from noisyft.backbones.base import Backbone
from noisyft.data.base import ImageSource, TorchImageDataset
from noisyft.data.transforms import EvalResize, Preprocess, hwc, normalize


def default_workers() -> int:
    """Decoding workers: all cores but one for the forward pass, at least one."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(dataset: Dataset, batch_size: int, num_workers: int | None, **kw) -> DataLoader:
    """A DataLoader that overlaps decoding (worker processes) with compute."""
    workers = default_workers() if num_workers is None else num_workers
    extra = {"persistent_workers": False, "prefetch_factor": 4} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(), **extra, **kw)


PRECISIONS = ("auto", "bf16", "fp32")


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether passes on ``device`` run under bf16 autocast: ``auto`` and ``bf16`` on CUDA; never on the CPU
    (CPU numbers stay those of float32)."""
    return torch.device(device).type == "cuda" and precision != "fp32"


def fixed_shapes(device: torch.device) -> bool:
    """Whether passes on ``device`` keep every batch at the full batch size (eval batches padded, training epochs in
    :class:`FullBatches`).

    On CUDA, cuDNN compiles kernels at run time for each new input shape (bf16 depthwise convolutions: measured on
    an H100, cuDNN 9.19, EfficientNet-Lite0 at 96 px: the first training step of a 128-image batch 9.8-14.3 s, then
    the first of an 82-image batch another 7.5-9.8 s, the first eval pass of a 66-image batch 1.8-2.3 s; a warm
    step 0.02 s; ``benchmarks/results/gpu_warmup_h100.md``). A short last batch is such a new shape in every
    split and every epoch's loader. On the CPU there is no such cost and padding would only add work, so CPU
    numbers stay exactly as they were.
    """
    return torch.device(device).type == "cuda"


class FullBatches(torch.utils.data.Sampler):
    """One shuffled epoch of ``n`` samples in batches of exactly ``batch_size``: the last, short batch is filled up
    with the epoch's first samples (so every sample is seen at least once, none twice in one batch). With fewer
    samples than a batch, the one batch holds them all; a lone sample is not a batch (it breaks BatchNorm)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        super().__init__()
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return 0 if self.n <= 1 else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.n <= 1:
            return
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        b = self.batch_size
        for i in range(0, self.n, b):
            batch = perm[i: i + b]
            if len(batch) < b and self.n >= b:
                batch = batch + perm[: b - len(batch)]
            yield batch


@torch.inference_mode()
def forward_features(model: nn.Module, batch: torch.Tensor, device: torch.device, precision: str = "auto",
                     pad_to: int = 0) -> torch.Tensor:
    """One eval-mode forward of a backbone or whole model, channels-last (faster on CPU and GPU), bf16 autocast on
    CUDA unless ``precision`` is ``fp32``. A batch of fewer than ``pad_to`` rows runs padded with zeros to that
    size, and only its own rows come back (eval mode: each row's output does not depend on the others); callers
    pass their batch size where :func:`fixed_shapes` says so."""
    n = len(batch)
    x = batch.to(device, non_blocking=True)
    if 0 < n < pad_to:
        x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))])
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device, precision)):
        return model(x).float()[:n]


def decoding_mode(num_workers: Optional[int]) -> str:
    """How feature extraction decodes: ``inline`` (``num_workers=0``: in the main thread, between forward passes),
    ``thread`` (the default on up to 2 cores: one background thread of the main process, which prepares the next
    batch while the forward pass runs) or ``processes`` (DataLoader workers: the default on more cores, or
    ``num_workers`` > 0 given).

    On 2 cores a worker process costs more than it saves: the batches cross process boundaries
    through shared memory, and the worker and the forward pass compete for the same two cores
    anyway; a thread shares the main process's memory, and libjpeg-turbo decoding and PIL
    resizing run without the GIL (benchmarks/results/extraction_speed.md).
    """
    if num_workers == 0:
        return "inline"
    if num_workers is None and default_workers() == 1:
        return "thread"
    return "processes"


def _prefetched(make: Callable[[np.ndarray], np.ndarray], batches: Sequence[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """``make(b)`` of each batch in turn, computed by one background thread up to ``depth`` batches ahead.

    One thread, so the source is never read by two threads at once (sources with an open file and
    a ``seek`` are not thread-safe). An exception in the thread (a broken image's UserError) is
    raised here, in order; closing the generator early stops the thread and waits for it.
    """
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        try:
            for b in batches:
                if stop.is_set() or not put((True, make(b))):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put((False, e))
            return
        put((False, None))

    worker = threading.Thread(target=run, name="noisyft-decode", daemon=True)
    worker.start()
    try:
        while True:
            ok, value = q.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join()


class _HWC:
    """PIL image → HWC uint8 tensor (:class:`EvalResize`), picklable for the worker processes: stacked HWC
    images make a channels-last batch."""

    def __init__(self, resize: EvalResize):
        self.resize = resize

    def __call__(self, im) -> torch.Tensor:
        return self.resize(im).permute(1, 2, 0)


def decoded_batches(source: ImageSource, pre: Preprocess, batches: Sequence[np.ndarray],
                    num_workers: Optional[int]) -> Iterator[torch.Tensor]:
    """uint8 image batches (N, C, H, W), channels-last, of ``source``'s rows, one per entry of ``batches``, in
    order, at the backbone's size (:class:`EvalResize`): one decoding pipeline for all the batches
    (:func:`decoding_mode`), so several cache shards share one worker start.

    In the ``thread`` and ``inline`` modes the images are only decoded off the main thread and each
    batch is resized in one call in it (:meth:`EvalResize.batch`: the same pixels as one at a time);
    worker processes resize image by image. Channels-last batches normalise into the channels-last
    float batch the forward pass wants without a transposing copy (a visible cost at 224 px).
    """
    mode = decoding_mode(num_workers)
    resize = EvalResize(pre.size, pre.interpolation)
    if mode == "processes":
        loader = make_loader(TorchImageDataset(source, _HWC(resize)), 1, num_workers, batch_sampler=list(batches))
        for x, _, _ in loader:
            yield x.permute(0, 3, 1, 2)
        return

    def decode(rows: np.ndarray) -> list[np.ndarray]:
        return [hwc(source.raw(int(i))) for i in rows]

    decoded = (decode(b) for b in batches) if mode == "inline" else _prefetched(decode, batches)
    try:
        for images in decoded:
            yield resize.batch(images)
    finally:
        if mode == "thread":
            decoded.close()


def chunks(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``rows`` cut into consecutive batches of ``batch_size`` (the last one shorter)."""
    return [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]


def batch_features(backbone: Backbone, source: ImageSource, batches: Sequence[np.ndarray], *,
                   num_workers: Optional[int], device: torch.device, precision: str = "auto") -> Iterator[np.ndarray]:
    """Eval-mode float32 features of each batch of rows of ``source`` in turn (the caller puts ``backbone`` in
    eval mode on ``device``).

    Images are decoded and resized (uint8) by :func:`decoded_batches` and each batch is normalised
    at once: the same numbers as :func:`eval_transform` per image (tested).
    """
    norm = normalize(backbone.preprocess)
    pad = max(map(len, batches), default=0) if fixed_shapes(device) else 0
    stream = decoded_batches(source, backbone.preprocess, batches, num_workers)
    try:
        for x in stream:
            yield forward_features(backbone, norm(x.to(device, non_blocking=True)), device, precision, pad).cpu().numpy()
    finally:
        stream.close()


def source_features(backbone: Backbone, source: ImageSource, rows: np.ndarray, *, batch_size: int,
                    num_workers: Optional[int], device: torch.device, bar=None, precision: str = "auto") -> np.ndarray:
    """Eval-mode float32 features of ``source`` at ``rows``, uncached (:func:`batch_features` in batches of
    ``batch_size``); ``bar`` (a tqdm) advances by each batch."""
    out = []
    for f in batch_features(backbone, source, chunks(np.asarray(rows), batch_size), num_workers=num_workers,
                            device=device, precision=precision):
        out.append(f)
        if bar is not None:
            bar.update(len(f))
    return np.concatenate(out).astype(np.float32)
