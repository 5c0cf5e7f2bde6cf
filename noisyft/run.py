"""The run directory: every output of a run, written atomically, with what finished.

Layout::

    config.json          resolved configuration (refuses to mix with another config)
    labels.csv           the given labels used (after noise injection) and true labels if known
    noise.json           noise kind, requested/realised rate, seed, transition counts
    metrics.jsonl/.csv   one record per epoch and phase
    selection.jsonl      one record per selection step
    timings.json         wall seconds per phase
    model.safetensors    final weights;  summary.json  headline numbers
    label_issues.csv     one row per training sample, most suspect first
    state.json           which phases finished
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from noisyft.atomic import atomic_path, write_json
from noisyft.errors import UserError


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
        self.timings: dict[str, float] = self.read_json("timings.json", {})
        self.state: dict = self.read_json("state.json", {"finished": []})

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str, default=None):
        f = self.file(name)
        return json.loads(f.read_text()) if f.exists() else default

    def write_json(self, name: str, obj) -> None:
        write_json(self.file(name), obj)

    def write_frame(self, name: str, df: pd.DataFrame) -> None:
        with atomic_path(self.file(name)) as tmp:
            df.to_csv(tmp, index=False)

    def reset_logs(self) -> None:
        """Start fresh metric logs (a run that restarts from the beginning)."""
        for name in ("metrics.jsonl", "selection.jsonl"):
            self.file(name).unlink(missing_ok=True)

    def log(self, stream: str, record: dict) -> None:
        """Append one JSON record to ``<stream>.jsonl`` (one line, flushed)."""
        with open(self.file(f"{stream}.jsonl"), "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def records(self, stream: str) -> list[dict]:
        f = self.file(f"{stream}.jsonl")
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

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


def load_weights(path: str | Path) -> dict:
    """Weights saved by a run (safetensors only: no pickle is ever loaded)."""
    return load_file(str(path))
