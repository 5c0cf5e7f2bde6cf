"""Fault injection for the resume tests: ``NOISYFT_KILL_AT=<point>`` SIGKILLs the process there.

Points: ``extract:<shard>`` (after a feature shard is written) and
``train:<epoch>:<step>`` (before that fine-tuning step), ``detect:<epoch>:<step>``
(before that DEFT detector step), ``lp:<epoch>`` (after that linear-probing epoch is logged, before
its checkpoint); ``nan:<where>:<epoch>:<step>`` (where: ``fine-tuning`` or ``linear probing``)
makes that step's loss NaN instead (see ``engine.check_finite``). A real SIGKILL at a
chosen place makes the kill-and-resume tests exact instead of timing-dependent.
In a data-parallel run, ``<point>@<rank>`` fires on that rank only (``nan:fine-tuning:1:0@1``).
"""
import os
import signal

from noisyft import dist


def at_fault(point: str) -> bool:
    """Whether ``NOISYFT_KILL_AT`` names ``point`` (on every rank) or ``point@<this rank>``."""
    wanted = os.environ.get("NOISYFT_KILL_AT")
    return wanted is not None and wanted in (point, f"{point}@{dist.rank()}")


def maybe_die(point: str) -> None:
    if at_fault(point):
        os.kill(os.getpid(), signal.SIGKILL)
