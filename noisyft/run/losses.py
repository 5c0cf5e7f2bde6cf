"""Per-sample losses and fitted per-class GMMs, saved by a run so the report can draw them.

A *stage* is one GMM fit on the training losses: ``epoch<e>`` for TURN's
selection before fine-tuning epoch ``e`` (``epoch1`` uses the linear probe's
logits) and ``final`` for the fit on the final model's losses that the
label-issue table is built from. Each stage is two files in ``RUN_DIR/losses/``:

* ``<stage>.npy``: float32 CE loss of every training sample, training-set order
  (the ``index`` column of ``labels.csv``/``label_issues.csv``);
* ``<stage>.json``: ``tau`` and per class the GMM ``means``/``variances``/``weights``
  (``[clean, noisy]`` pairs in loss units, ``null`` where not fitted) and ``status``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from noisyft.atomic import write_text
from noisyft.run.files import LOSSES_DIR
from noisyft.selection import GMMFit


def _pairs(a: np.ndarray) -> list:
    """``(C, 2)`` float array as nested lists with ``None`` for NaN (strict JSON)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def gmm_record(fit: GMMFit, tau: float, **extra) -> dict:
    """The JSON-able parameters of a per-class GMM fit (what the report needs to redraw it)."""
    return {"tau": float(tau), "means": _pairs(fit.means), "variances": _pairs(fit.variances),
            "weights": _pairs(fit.weights), "status": list(fit.status), "n_nonfinite": int(fit.n_nonfinite), **extra}


def save_losses(run, stage: str, losses: np.ndarray, fit: GMMFit, tau: float, **extra) -> None:
    """Save one stage's losses (float32) and GMM parameters into ``run`` (a RunDir)."""
    run.save_array(f"{LOSSES_DIR}/{stage}.npy", np.asarray(losses, dtype=np.float32))
    write_text(run.file(f"{LOSSES_DIR}/{stage}.json"), json.dumps(gmm_record(fit, tau, **extra), separators=(",", ":")) + "\n")


def list_stages(run_dir: str | Path) -> list[str]:
    """Stages saved in a run, selection epochs in order then ``final``."""
    d = Path(run_dir) / LOSSES_DIR
    names = {p.stem for p in d.glob("*.json") if (d / f"{p.stem}.npy").exists()} if d.is_dir() else set()
    epochs = sorted((n for n in names if re.fullmatch(r"epoch\d+", n)), key=lambda n: int(n[5:]))
    return epochs + (["final"] if "final" in names else [])


def load_stage(run_dir: str | Path, stage: str) -> tuple[np.ndarray, dict]:
    """``(losses, gmm)`` of one stage; gmm lists are turned into ``(C, 2)`` float arrays (NaN = not fitted)."""
    d = Path(run_dir) / LOSSES_DIR
    gmm = json.loads((d / f"{stage}.json").read_text())
    for key in ("means", "variances", "weights"):
        gmm[key] = np.array([[np.nan if v is None else v for v in row] for row in gmm[key]], dtype=np.float64)
    return np.load(d / f"{stage}.npy"), gmm


def stage_title(stage: str) -> str:
    return "final model" if stage == "final" else f"selection, FFT epoch {stage[5:]}"


def component_densities(x: np.ndarray, gmm: dict, c: int) -> Optional[np.ndarray]:
    """``(2, len(x))`` weighted densities ``w_k N(x; m_k, v_k)`` of class ``c``'s components, or None if unfitted."""
    m, v, w = gmm["means"][c], gmm["variances"][c], gmm["weights"][c]
    if not (np.isfinite(m).all() and np.isfinite(v).all() and (v > 0).all()):
        return None
    x = np.asarray(x, dtype=np.float64)[None, :]
    return w[:, None] * np.exp(-0.5 * (x - m[:, None]) ** 2 / v[:, None]) / np.sqrt(2 * np.pi * v[:, None])


def tau_crossings(x: np.ndarray, dens: np.ndarray, tau: float) -> list[float]:
    """Losses on the grid ``x`` where the clean posterior crosses ``tau`` (linear interpolation).

    Usually one point (below it a sample counts as clean); with unequal variances the
    wider component can win again at the far end, giving a second crossing.
    """
    total = dens.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        post = np.where(total > 0, dens[0] / total, np.nan) - tau
    out = []
    for i in np.flatnonzero(np.isfinite(post[:-1]) & np.isfinite(post[1:]) & (np.sign(post[:-1]) != np.sign(post[1:]))):
        a, b = post[i], post[i + 1]
        out.append(float(x[i] + (x[i + 1] - x[i]) * a / (a - b)) if a != b else float(x[i]))
    return out
