"""Helpers shared by the benchmark scripts: machine facts, result files, the shared data path."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_CIFAR10 = Path(os.environ.get("NOISYFT_CIFAR10_ZIP")  # a worktree elsewhere names the shared zip
                      or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.zip")


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads()}


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp() -> dict:
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "commit": git_rev()}


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**stamp(), **payload}, indent=2, default=float) + "\n")
    s = stamp()
    m = s["machine"]
    header = (f"Command: `{s['command']}`  \nDate: {s['date']}  \nCommit: {s['commit']}  \n"
              f"Machine: {m['cores']} cores, {m['cpu']}, GPU: {m['gpu'] or 'none'}, torch {m['torch']}\n\n")
    (RESULTS / f"{name}.md").write_text(header + markdown + "\n")


def md_table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def cifar10_zip() -> str:
    if not SHARED_CIFAR10.exists():
        sys.exit(f"benchmark needs the shared CIFAR-10 zip at {SHARED_CIFAR10}")
    return str(SHARED_CIFAR10)


def method_variant(label: str) -> tuple[str, list[str]]:
    """A method as the design studies and the GPU timing name it, ``name`` or ``name?key=value&key=value`` (its
    ``--extra`` settings): ``(name, ["key=value", ...])``."""
    name, _, query = label.partition("?")
    return name, [kv for kv in query.split("&") if kv]


def variant_slug(label: str) -> str:
    """A :func:`method_variant` label as a folder name (``consensus?a=1`` → ``consensus_a-1``)."""
    return label.replace("?", "_").replace("&", "_").replace("=", "-").replace(":", "")
