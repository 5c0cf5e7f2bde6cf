"""``python -m tests.dist_audit ARGS``: run the ``noisyft`` CLI and record every file operation under a folder.

An audit hook (``sys.addaudithook``) sees each ``open`` for writing, rename, removal and
mkdir that this process makes; those under ``$NOISYFT_TEST_WATCH`` (several folders may be
given, separated by ``os.pathsep``) are written, one per line, to ``$NOISYFT_TEST_AUDIT.rank<R>``
when the process exits. The data-parallel tests launch it with ``torchrun`` to check that
only rank 0 writes a run's files.
"""
import atexit
import json
import os
import sys

WATCH = [w for w in os.environ.get("NOISYFT_TEST_WATCH", "").split(os.pathsep) if w]
LOG = f"{os.environ['NOISYFT_TEST_AUDIT']}.rank{os.environ.get('RANK', '0')}"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
events: list = []


def _watched(path) -> bool:
    try:
        text = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False  # a file descriptor
    return any(text.startswith(w) for w in WATCH)


def hook(event: str, args) -> None:
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
            (isinstance(flags, int) and flags & WRITE_FLAGS)
        if writes and _watched(path):
            events.append(["open", os.fsdecode(path)])
    elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"):
        if args and _watched(args[0]):
            events.append([event, os.fsdecode(args[0])])


def dump() -> None:
    with open(LOG, "w") as f:
        json.dump(events, f)


atexit.register(dump)
sys.addaudithook(hook)

if __name__ == "__main__":
    from noisyft.cli import main

    sys.exit(main(sys.argv[1:]))
