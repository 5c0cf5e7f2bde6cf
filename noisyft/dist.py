"""The process group of a data-parallel run (``torchrun`` / ``accelerate launch``): the one module that reads
``RANK``/``WORLD_SIZE``.

A launcher starts N copies of ``noisyft fit`` with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_from_env` joins them into one process
group (gloo on the CPU, nccl on CUDA). Without those variables (or with ``WORLD_SIZE=1``)
every helper here is the identity of one process: rank 0 of 1, barriers return at once,
gathers return their input, so single-process runs do exactly what they did before.

What the rest of noisyft uses: :func:`rank`, :func:`world_size`, :func:`is_main`,
:func:`barrier`, :func:`broadcast_object`, :func:`shard` (a rank's contiguous, batch-aligned
slice of N samples), :func:`gather_by_index` (per-sample arrays back in sample order, each
sample once, from whichever rank computed it), :func:`all_sum` (one number summed over ranks:
the NaN agreement of a training step), :func:`on_main` (run on rank 0, hand its result or
its error to every rank), :func:`split_batch` / :func:`global_rows` (a loss that keeps
per-sample state folds the whole global batch into it, not only this rank's part), :func:`all_rows`
(a batch's rows split over ranks, whole again on every rank) and :func:`sum_grads` (the gradient
sum DDP would make, for a model trained outside its ``forward``).
"""
from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TIMEOUT = timedelta(minutes=int(os.environ.get("NOISYFT_DIST_TIMEOUT_MIN", "30")))


def env_world_size() -> int:
    """``WORLD_SIZE`` as the launcher set it (1 when absent), whether or not the group is joined yet."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_from_env(device: str = "auto") -> None:
    """Join the launcher's process group (idempotent; nothing when ``WORLD_SIZE`` is 1 or unset).

    nccl when this run's device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    if env_world_size() <= 1 or _ready():
        return
    cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=_TIMEOUT)


def rank() -> int:
    return torch.distributed.get_rank() if _ready() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _ready() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 alone)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Rank 0: the one process that writes run files and checkpoints."""
    return rank() == 0


def device(name: str) -> torch.device:
    """The torch device of ``--device name`` for this rank (``auto``/``cuda`` → ``cuda:LOCAL_RANK`` in a group)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None and world_size() > 1:
        return torch.device("cuda", local_rank())
    return dev


def _comm_device() -> torch.device:
    """Where collective tensors live: the current CUDA device for nccl, the CPU for gloo."""
    if _ready() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled; for small things: indices, flags, messages)."""
    if world_size() <= 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


class RemoteError(RuntimeError):
    """An error raised on rank 0 inside :func:`on_main`, re-raised on the other ranks with the same message."""


def on_main(fn: Callable[[], T], share: bool = True) -> Optional[T]:
    """Run ``fn`` on rank 0 only; every rank then returns its result (broadcast; with ``share=False`` the
    others get None: for results that are big or hold files) or raises its error.

    The other ranks re-raise rank 0's exception type when it pickles (a ``UserError`` keeps its
    one-line message), so a mistake found by rank 0 stops every rank with the same line, no hang.
    """
    if world_size() <= 1:
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # handed to every rank below, then raised everywhere
            error = e
    if error is not None:
        error.on_every_rank = True  # the CLI then waits for every rank to print it (see :func:`noisyft.cli.main`)
    payload = broadcast_object((None if error or not share else result, _portable(error)) if is_main() else None)
    if is_main():
        if error is not None:
            raise error
        return result
    if payload[1] is not None:
        raise payload[1]
    return payload[0]


def _portable(error: Optional[BaseException]) -> Optional[BaseException]:
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RemoteError(f"{type(error).__name__}: {error}")


def shard(n: int, align: int = 1, r: Optional[int] = None, w: Optional[int] = None) -> np.ndarray:
    """Rank ``r``'s contiguous slice of ``range(n)`` (this rank's by default), cut at multiples of ``align``.

    Cutting at batch boundaries gives every rank the same batches as one process would form,
    so an eval pass's per-sample numbers do not depend on the number of ranks.
    """
    r = rank() if r is None else r
    w = world_size() if w is None else w
    blocks = -(-n // max(1, align))
    lo, hi = blocks * r // w * align, blocks * (r + 1) // w * align
    return np.arange(min(lo, n), min(hi, n))


def _gather_bytes(data: bytes, dst: Optional[int]) -> Optional[list[bytes]]:
    """Every rank's ``data`` on ``dst`` (all ranks when None), as one padded uint8 collective."""
    dev = _comm_device()
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    buf = torch.zeros(longest, dtype=torch.uint8, device=dev)
    if data:
        buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    if dst is None:
        bufs = [torch.empty_like(buf) for _ in sizes]
        torch.distributed.all_gather(bufs, buf)
    else:
        bufs = [torch.empty_like(buf) for _ in sizes] if rank() == dst else None
        torch.distributed.gather(buf, bufs, dst=dst)
        if rank() != dst:
            return None
    return [b[:int(s.item())].cpu().numpy().tobytes() for b, s in zip(bufs, sizes)]


def gather_by_index(values: np.ndarray, indices: np.ndarray, n: int, dst: Optional[int] = 0) -> Optional[np.ndarray]:
    """Per-sample rows computed by each rank (``values[k]`` belongs to sample ``indices[k]``) → one (n, …) array
    in sample order on rank ``dst`` (None elsewhere), or on every rank when ``dst`` is None.

    Compact arrays only (a loss, a prediction per sample), not full logits at scale. Every sample
    must come from exactly one rank: a sample missing or sent twice is an error, never a silent
    zero or a double count.
    """
    values = np.ascontiguousarray(values)
    indices = np.asarray(indices, dtype=np.int64)
    if len(values) != len(indices):
        raise ValueError(f"gather_by_index: {len(values)} rows for {len(indices)} indices")
    if world_size() <= 1:
        out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
        if len(indices) != n or (n and (indices.min() < 0 or not (np.bincount(indices, minlength=n) == 1).all())):
            raise ValueError(f"gather_by_index: {len(indices)} indices do not cover {n} samples once each")
        out[indices] = values
        return out
    parts = _gather_bytes(pickle.dumps((values.dtype.str, values.shape[1:], indices.tobytes(), values.tobytes()),
                                       protocol=5), dst)
    if parts is None:
        return None
    dtype, tail, out, seen = None, None, None, []
    for blob in parts:
        dt, shape, idx_b, val_b = pickle.loads(blob)
        idx = np.frombuffer(idx_b, dtype=np.int64)
        if out is None:
            dtype, tail = np.dtype(dt), tuple(shape)
            out = np.empty((n, *tail), dtype=dtype)
        out[idx] = np.frombuffer(val_b, dtype=dtype).reshape((len(idx), *tail))
        seen.append(idx)
    seen = np.bincount(np.concatenate(seen), minlength=n) if seen else np.zeros(n, dtype=np.int64)
    if len(seen) != n or not (seen == 1).all():
        raise RuntimeError(f"gather_by_index: {int((seen == 0).sum())} samples missing and {int((seen > 1).sum())} "
                           f"sent twice across {world_size()} ranks")
    return out


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` (a detached tensor) summed over ranks; a NaN on any rank makes the sum NaN on every rank."""
    if world_size() <= 1:
        return value
    t = value.detach().to(_comm_device(), torch.float64).reshape(1).clone()
    torch.distributed.all_reduce(t)
    return t.reshape(()).to(value.device)


_split: Optional[bool] = None  # inside split_batch(): whether this rank's rows of the global batch are real


@contextmanager
def split_batch(real: bool = True) -> Iterator[None]:
    """Inside: the batch a loss sees is this rank's part of one global batch (the data-parallel training step).

    ``real=False`` marks a stand-in part (a rank with no sample of a short last batch runs one at weight 0):
    it contributes no rows to :func:`global_rows`.
    """
    global _split
    before, _split = _split, bool(real)
    try:
        yield
    finally:
        _split = before


def global_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample rows of the whole global batch: inside :func:`split_batch` in a group, every rank's rows of each
    tensor (same first dimension; detached) concatenated in rank order, which is the global batch's order; elsewhere
    the tensors themselves, untouched (one process, or a pass every rank makes over the same rows).

    What a loss with per-sample state (ELR's running targets, a temporal ensemble) folds in, so every rank keeps
    the state one process would have. Every rank of the group must call it at the same step.
    """
    if _split is None or world_size() <= 1:
        return tensors
    return all_rows(*tensors, real=_split)


def all_rows(*tensors: torch.Tensor, real: bool = True) -> tuple[torch.Tensor, ...]:
    """Every rank's rows of each tensor (same first dimension; detached), concatenated in rank order, on every rank;
    the tensors themselves alone. ``real=False``: this rank's rows are a stand-in and contribute none.

    How a pass split by rows inside one batch (a frozen backbone encoding each rank's rows of a batch that
    every rank holds) hands every rank the whole batch's result. Every rank of the group must call it.
    """
    if world_size() <= 1:
        return tensors
    dev = _comm_device()
    rows = len(tensors[0]) if real else 0
    size = torch.tensor([rows], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    out = []
    for t in tensors:
        if len(t) != len(tensors[0]):
            raise ValueError(f"all_rows: {len(t)} rows against {len(tensors[0])}")
        buf = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
        buf[:rows] = t.detach()[:rows].to(dev)
        bufs = [torch.empty_like(buf) for _ in counts]
        torch.distributed.all_gather(bufs, buf)
        out.append(torch.cat([b[:c] for b, c in zip(bufs, counts)]).to(t.device))
    return tuple(out)


def sum_grads(params: list[torch.Tensor]) -> None:
    """Each parameter's gradient summed over ranks, in place, in one collective (nothing alone; a missing gradient
    counts as zeros): what DDP does for a model trained through another method than its ``forward``, when each
    rank's loss is already its share of the global batch's loss."""
    if world_size() <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1).float() for g in grads]).to(_comm_device())
    torch.distributed.all_reduce(flat)
    at = 0
    for p, g in zip(params, grads):
        p.grad = flat[at: at + g.numel()].view(g.shape).to(p.device, g.dtype)
        at += g.numel()


def destroy() -> None:
    """Leave the process group (at the end of a run; a no-op without one)."""
    if _ready():
        torch.distributed.destroy_process_group()
