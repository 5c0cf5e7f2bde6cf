"""An exclusive lock on a run directory, so two processes never write one run at once.

``RUN_DIR/.lock`` is held with ``fcntl.flock`` for the run's whole duration and
records who holds it (pid, host, start time). The kernel drops a flock when its
holder dies (kill -9 included), so a lock left by a dead process never blocks:
there is nothing stale to clean up. The file itself stays (removing a locked
file would let a third process lock a new file of the same name).
On systems without ``fcntl`` (Windows) the lock is a no-op.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from noisyft.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    """``acquire()`` takes the lock or raises UserError naming its holder (``wait``: blocks until it is free);
    ``release()`` gives it back. ``lock_file`` puts the lock outside the run directory (``RUN_DIR/.lock`` by default)."""

    def __init__(self, run_dir: str | Path, *, wait: bool = False, lock_file: str | Path | None = None):
        self.path = Path(lock_file) if lock_file is not None else Path(run_dir) / LOCK_NAME
        self.wait = wait
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncate: the holder's record is in it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"run directory {self.path.parent} is in use by another noisyft process "
                            f"({self.holder_text()}); wait for it to finish or use another --out") from None
        except OSError:  # a file system without flock support (some network mounts): run unlocked
            os.close(fd)
            return
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def holder(self) -> Optional[dict]:
        """The record written by the process that holds (or last held) the lock."""
        try:
            info = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def holder_text(self) -> str:
        info = self.holder()
        if not info:
            return "holder unknown"
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
