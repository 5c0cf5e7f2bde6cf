"""The run directory: every output of a run, written atomically, with what finished.

Layout::

    config.json          resolved configuration (refuses to mix with another config)
    labels.csv           the given labels used (after noise injection) and true labels if known
    noise.json           noise kind, requested/realised rate, seed, transition counts
    metrics.jsonl/.csv   one record per epoch and phase (JSONL is the source of truth; the CSV is
                         the same records flattened, rewritten after every record)
    selection.jsonl/.csv one record per selection step
    tensorboard/         TensorBoard event files: scalar ``<stream>/<key>`` for every numeric
                         field (nested dicts as ``<stream>/<key>/<sub>``) at step = the record's
                         1-based position in its stream, so metrics count LP epochs first and
                         FFT epochs continue (E_LP + e); selection steps are the FFT epochs.
                         Rewritten from the checkpoint's records on resume (no duplicate steps).
    losses/              per-sample CE losses (float32 .npy, training-set order) and the fitted
                         per-class GMM (.json) of every selection epoch and the final model
    timings.json         wall seconds per phase
    model.safetensors    final weights;  summary.json  headline numbers
    label_issues.csv     one row per training sample, most suspect first
    checkpoint.pt        latest epoch's training state + logs (resume); progress.json says which
    state.json           which phases finished
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
from safetensors.torch import load_file, save_file

from noisyft.atomic import atomic_path, write_json
from noisyft.errors import UserError

log = logging.getLogger("noisyft")
LOG_STREAMS = ("metrics", "selection")
TENSORBOARD_DIR = "tensorboard"


class RunDir:
    """One run's directory. Creating it over an existing run of another config is refused."""

    def __init__(self, path: str | Path, identity: dict, full_config: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_file = self.path / "config.json"
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text()).get("identity", {})
            if json.loads(json.dumps(old, default=str)) != json.loads(json.dumps(identity, default=str)):
                diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
                raise UserError(f"run directory {self.path} holds a run with another config (differs in: {', '.join(diff)}); "
                                f"use another --out or delete it")
        write_json(cfg_file, {"identity": identity, "config": full_config})
        self.timings: dict[str, float] = {}
        self._records: dict[str, list] = {}
        self.state: dict = self.read_json("state.json", {"finished": []})
        self._tb = None  # SummaryWriter, opened at the first record
        self._tb_missing = False

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str, default=None):
        f = self.file(name)
        return json.loads(f.read_text()) if f.exists() else default

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
        so records logged after the checkpoint by a killed run leave no trace.
        """
        self._records = {k: list(v) for k, v in (checkpoint or {}).get("records", {}).items()}
        self.timings = dict((checkpoint or {}).get("timings", {}))
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
        self.write_json("timings.json", self.timings)

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
        f = self.file(f"{stream}.jsonl")
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

    def save_checkpoint(self, tag: str, epoch: int, states: dict) -> None:
        """One atomic file with the training state *and* the logs/timings up to this epoch.

        Keeping logs inside the checkpoint makes a resumed run's logs identical to an
        uninterrupted run's, whatever moment the kill came.
        """
        blob = {"tag": tag, "epoch": epoch, "states": states, "records": self._records, "timings": self.timings}
        with atomic_path(self.file("checkpoint.pt")) as tmp:
            torch.save(blob, tmp)
        self.write_json("progress.json", {"tag": tag, "epoch": epoch})

    def load_checkpoint(self) -> dict | None:
        f = self.file("checkpoint.pt")
        return torch.load(f, map_location="cpu", weights_only=True) if f.exists() else None

    def drop_checkpoint(self) -> None:
        self.file("checkpoint.pt").unlink(missing_ok=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; times add up across calls and are saved at once."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            self.write_json("timings.json", self.timings)

    def finish(self, step: str) -> None:
        if step not in self.state["finished"]:
            self.state["finished"].append(step)
        self.write_json("state.json", self.state)

    def save_model(self, model: torch.nn.Module, meta: dict, name: str = "model.safetensors") -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(self.file(name)) as tmp:
            save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})


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


def load_weights(path: str | Path) -> dict:
    """Weights saved by a run (safetensors only: no pickle is ever loaded)."""
    return load_file(str(path))
