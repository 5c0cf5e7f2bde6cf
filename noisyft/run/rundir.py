"""The run directory while a run uses it: lock, config check, logs (JSONL, CSV, TensorBoard), checkpoints, timings.

Which files a run writes, and what each holds, is listed in :mod:`noisyft.run.files`.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from noisyft.atomic import atomic_path, write_json
from noisyft.errors import UserError
from noisyft.run.files import (CHECKPOINT, CONFIG, FORMAT, LOG_STREAMS, LOSSES_DIR, MARKER, MODEL, PROGRESS,
                                STATE, TENSORBOARD_DIR, TIMINGS, WORK_FILES)
from noisyft.runlock import RunLock

log = logging.getLogger("noisyft")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a noisyft run directory: it has the marker, or (runs made before the marker
    existed) a config.json holding noisyft's ``identity`` and ``config``."""
    if (path / MARKER).is_file():
        return True
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("identity"), dict) and isinstance(cfg.get("config"), dict)


def check_out_dir(path: Path) -> None:
    """Refuse a ``--out`` that is a file, or an existing non-empty folder that is not a noisyft run.

    noisyft writes and removes files of fixed names (labels.csv, metrics.csv, tensorboard/, …) in a
    run directory; in a folder of the user's those would be the user's files.
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder: give a new or empty folder for the run directory")
    if not path.is_dir() or is_run_dir(path):
        return
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f", … ({len(entries)} entries)" if len(entries) > 5 else "")
        raise UserError(f"--out {path} is a folder that is not a noisyft run and is not empty (holds {shown}); "
                        f"noisyft would overwrite files there: give a new or empty folder")


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL log (one JSON object a line; blank lines skipped); [] when the file is missing."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_run_json(path: Path, default=None):
    """A JSON file of a run directory; one-line UserError when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty'}); "
                        f"it was not written by noisyft or is damaged: use another --out or delete the run "
                        f"directory") from None


class RunDir:
    """One run's directory: locked while in use; creating it over a run of another config is refused.

    A run that never started work (no checkpoint, no finished phase, no logged epoch: e.g. it
    failed on a corrupt image or a mistyped backbone) is restarted with the new config instead.
    """

    def __init__(self, path: str | Path, identity: dict, full_config: dict, launch: dict | None = None):
        """``launch``: how the run was started (e.g. ``{"world_size": 2}``), recorded in config.json, not part of
        the identity (a run may resume with another number of processes)."""
        self.path = Path(path)
        self.timings: dict[str, float] = {}
        self._records: dict[str, list] = {}
        self._tb = None  # SummaryWriter, opened at the first record
        self._tb_missing = False
        check_out_dir(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).exists():
            from noisyft.atomic import write_text

            write_text(self.path / MARKER, "a noisyft run directory: noisyft writes and deletes its own files here\n")
        self._lock = RunLock(self.path)
        self._lock.acquire()
        try:
            self.restarted = self._check_config(identity)
            write_json(self.path / CONFIG, {"format": FORMAT, "identity": identity, "config": full_config,
                                            **({"launch": launch} if launch else {})})
            self.state: dict = self._read_state()
        except BaseException:
            self.release()
            raise

    def _check_config(self, identity: dict) -> bool:
        """Refuse another config over a run that did work; True if a never-started run is restarted."""
        cfg_file = self.path / CONFIG
        saved = read_run_json(cfg_file)
        if saved is None:
            return False
        if not isinstance(saved, dict) or not isinstance(saved.get("identity"), dict):
            raise UserError(f"{cfg_file} is not a noisyft run config (no identity); use another --out or delete it")
        old = json.loads(json.dumps(saved["identity"], default=str))
        new = json.loads(json.dumps(identity, default=str))
        if old == new:
            return False
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if self.did_work():
            raise UserError(f"run directory {self.path} holds a run with another config (differs in: {', '.join(diff)}); "
                            f"use another --out or delete it")
        log.warning("run directory %s holds a run that never started training; restarting it with the new config "
                    "(differs in: %s)", self.path, ", ".join(diff))
        for name in (TIMINGS, PROGRESS, STATE):  # the failed attempt's leftovers
            self.file(name).unlink(missing_ok=True)
        return True

    def did_work(self) -> bool:
        """Whether the run saved anything worth keeping: a checkpoint, a finished phase, a logged record, outputs."""
        if any(self.file(n).exists() for n in WORK_FILES):
            return True
        if any(self.file(f"{s}.jsonl").is_file() and self.file(f"{s}.jsonl").stat().st_size for s in LOG_STREAMS):
            return True
        losses = self.file(LOSSES_DIR)
        if losses.is_dir() and any(losses.iterdir()):
            return True
        state = read_run_json(self.file(STATE), {})
        return bool(isinstance(state, dict) and state.get("finished"))

    def _read_state(self) -> dict:
        state = read_run_json(self.file(STATE), {"finished": []})
        if not isinstance(state, dict) or not isinstance(state.get("finished"), list):
            raise UserError(f"{self.file(STATE)} is not a noisyft run state; delete it to let the run "
                            f"continue from its checkpoint")
        return state

    def release(self) -> None:
        """Close the TensorBoard writer and unlock the directory (another process may use it now)."""
        self.close()
        self._lock.release()

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str, default=None):
        return read_run_json(self.file(name), default)

    def write_json(self, name: str, obj) -> None:
        write_json(self.file(name), obj)

    def write_frame(self, name: str, df: pd.DataFrame) -> None:
        """Write ``df`` as CSV, atomically, with formula-like text cells escaped (see :mod:`noisyft.csvsafe`)."""
        from noisyft.csvsafe import write_csv

        write_csv(self.file(name), df)

    def save_array(self, name: str, array: np.ndarray) -> None:
        """Write ``array`` as ``.npy`` at ``name`` (sub-folders created), atomically."""
        with atomic_path(self.file(name)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(array))

    def start(self, checkpoint: dict | None) -> None:
        """Begin (or continue from ``checkpoint``): logs and timings are exactly those of the checkpoint.

        JSONL, CSV and TensorBoard logs are all rebuilt from the checkpoint's records,
        so records logged after the checkpoint by a killed run leave no trace. Timings are
        the larger of the checkpoint's and ``timings.json``'s per phase: the wall time a killed
        attempt spent after its last checkpoint (finished phases, e.g. LP epochs) is kept.
        """
        self._records = {k: list(v) for k, v in (checkpoint or {}).get("records", {}).items()}
        self.timings = dict((checkpoint or {}).get("timings", {}))
        spent = self.read_json(TIMINGS, {})
        for name, seconds in (spent.items() if isinstance(spent, dict) else ()):
            if isinstance(seconds, (int, float)) and seconds > self.timings.get(name, 0.0):
                self.timings[name] = float(seconds)
        for stream in LOG_STREAMS:
            self.file(f"{stream}.jsonl").unlink(missing_ok=True)
            self.file(f"{stream}.csv").unlink(missing_ok=True)
        self.close()
        shutil.rmtree(self.file(TENSORBOARD_DIR), ignore_errors=True)
        for stream, recs in self._records.items():
            from noisyft.atomic import write_text

            write_text(self.file(f"{stream}.jsonl"), "".join(json.dumps(r, default=float) + "\n" for r in recs))
            self._write_csv(stream)
            for step, rec in enumerate(recs, 1):
                self._tb_scalars(stream, rec, step)
        self._tb_flush()
        self.write_json(TIMINGS, self.timings)

    def log(self, stream: str, record: dict) -> None:
        """Append one JSON record to ``<stream>.jsonl`` (one line, flushed); mirror it to CSV and TensorBoard."""
        record = json.loads(json.dumps(record, default=float))
        self._records.setdefault(stream, []).append(record)
        with open(self.file(f"{stream}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv(stream)
        self._tb_scalars(stream, record, len(self._records[stream]))
        self._tb_flush()

    def _write_csv(self, stream: str) -> None:
        """``<stream>.csv``: the stream's records flattened (see :func:`flatten_record`)."""
        self.write_frame(f"{stream}.csv", pd.DataFrame([flatten_record(r) for r in self._records.get(stream, [])]))

    def _writer(self):
        """The TensorBoard writer (None if the ``tensorboard`` package is missing: logged once)."""
        if self._tb is None and not self._tb_missing:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb_missing = True
                log.warning("tensorboard is not installed: no TensorBoard event files (pip install tensorboard)")
                return None
            self._tb = SummaryWriter(str(self.file(TENSORBOARD_DIR)))
        return self._tb

    def _tb_scalars(self, stream: str, record: dict, step: int) -> None:
        values = {k: float(v) for k, v in flatten_record(record).items() if isinstance(v, (int, float))}
        writer = self._writer() if values else None
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{stream}/{key}", value, step)

    def _tb_flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (a later record opens a new event file)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def records(self, stream: str) -> list[dict]:
        return read_jsonl(self.file(f"{stream}.jsonl"))

    def save_checkpoint(self, tag: str, epoch: int, states: dict) -> None:
        """One atomic file with the training state *and* the logs/timings up to this epoch.

        Keeping logs inside the checkpoint makes a resumed run's logs identical to an
        uninterrupted run's, whatever moment the kill came.
        """
        blob = {"tag": tag, "epoch": epoch, "states": states, "records": self._records, "timings": self.timings}
        with atomic_path(self.file(CHECKPOINT)) as tmp:
            torch.save(blob, tmp)
        self.write_json(PROGRESS, {"tag": tag, "epoch": epoch})

    def load_checkpoint(self) -> dict | None:
        """The saved training state, or None. A damaged file is a one-line UserError, not a silent restart:
        it is the only record of the work done (writes are atomic, so a kill never truncates it)."""
        f = self.file(CHECKPOINT)
        if not f.exists():
            return None
        try:
            ck = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, foreign pickle refused by weights_only, …
            raise UserError(f"{f} is unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); "
                            f"if the run folder was copied, copy it again, else delete {f} to restart the run "
                            f"from the beginning") from None
        if not isinstance(ck, dict) or not {"tag", "epoch", "states"} <= set(ck):
            raise UserError(f"{f} is not a noisyft checkpoint; delete it to restart the run from the beginning")
        return ck

    def drop_checkpoint(self) -> None:
        self.file(CHECKPOINT).unlink(missing_ok=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; times add up across calls and are saved at once."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            self.write_json(TIMINGS, self.timings)

    def finish(self, step: str) -> None:
        if step not in self.state["finished"]:
            self.state["finished"].append(step)
        self.write_json(STATE, self.state)

    def save_model(self, model: torch.nn.Module, meta: dict, name: str = MODEL) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(self.file(name)) as tmp:
            save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})


class FollowerRunDir(RunDir):
    """The run directory as a data-parallel run's other ranks see it: they read it (the checkpoint to
    resume from, the finished state) but never write: rank 0's :class:`RunDir` writes every file.

    Logs, timings and checkpoints are kept in memory only, so the methods run unchanged on every rank.
    """

    def __init__(self, path: str | Path):  # noqa: super().__init__ would lock and write
        self.path = Path(path)
        self.timings = {}
        self._records = {}
        self._tb = None
        self._tb_missing = True
        self.restarted = False
        self.state = self._read_state()

    def release(self) -> None:
        pass

    def write_json(self, name: str, obj) -> None:
        pass

    def write_frame(self, name: str, df: pd.DataFrame) -> None:
        pass

    def save_array(self, name: str, array: np.ndarray) -> None:
        pass

    def start(self, checkpoint: dict | None) -> None:
        self._records = {k: list(v) for k, v in (checkpoint or {}).get("records", {}).items()}
        self.timings = dict((checkpoint or {}).get("timings", {}))

    def log(self, stream: str, record: dict) -> None:
        self._records.setdefault(stream, []).append(json.loads(json.dumps(record, default=float)))

    def save_checkpoint(self, tag: str, epoch: int, states: dict) -> None:
        pass

    def drop_checkpoint(self) -> None:
        pass

    def finish(self, step: str) -> None:
        if step not in self.state["finished"]:
            self.state["finished"].append(step)

    def save_model(self, model: torch.nn.Module, meta: dict, name: str = MODEL) -> None:
        pass


def flatten_record(record: dict, prefix: str = "") -> dict:
    """One level of columns for a log record: nested dicts become ``key/sub``, lists JSON text."""
    flat: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_record(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat
