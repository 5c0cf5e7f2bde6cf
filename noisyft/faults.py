"""Fault injection for the resume tests: ``NOISYFT_KILL_AT=<point>`` SIGKILLs the process there.

Points: ``extract:<shard>`` (after a feature shard is written) and
``train:<epoch>:<step>`` (before that fine-tuning step), ``detect:<epoch>:<step>``
(before that DEFT detector step), ``lp:<epoch>`` (after that linear-probing epoch is logged, before
its checkpoint); ``nan:<where>:<epoch>:<step>`` (where: ``fine-tuning`` or ``linear probing``)
makes that step's loss NaN instead (see ``engine.check_finite``). A real SIGKILL at a
chosen place makes the kill-and-resume tests exact instead of timing-dependent.
"""
import os
import signal


def maybe_die(point: str) -> None:
    if os.environ.get("NOISYFT_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
