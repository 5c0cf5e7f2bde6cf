"""Plots of a bench result (``noisyft bench`` writes them next to results.md).

* ``accuracy_vs_time.png``: the headline test accuracy (validation-selected
  when the grid has a validation split, else last epoch, of the model the
  method delivers: see :func:`noisyft.bench.results.headline_rule`) against the
  method's wall time, one point per method (mean over seeds) and one panel per
  data · backbone · noise setting — the TURN paper's Fig. 3a, which argues that
  TURN buys its accuracy at a fraction of UNICON's cost.
* ``selection.png``: precision and recall of the selected (trusted) set per
  selection epoch for each method that selects, one row per setting — how
  clean the training subset is, and how much of the clean data it keeps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from noisyft.bench.results import headline_rule
from noisyft.figures import plt, save_png


def _settings(results: dict) -> list[tuple]:
    """(data, backbone, noise) panels, in grid order."""
    spec = results["spec"]
    return [(d, b, n) for d in spec["data"] for b in spec["backbones"] for n in spec["noises"]]


def _title(setting: tuple) -> str:
    data, backbone, noise = setting
    return f"{data} · {backbone} · {noise or 'given labels'}"


def plot_accuracy_vs_time(results: dict, path: str | Path) -> Path:
    """Headline test accuracy (%) against training wall time (s, log scale), one labelled point per method."""
    rule = headline_rule(results["spec"])
    settings = _settings(results)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        rows = [a for a in results["table"] if (a["data"], a["backbone"], a["noise"]) == setting and a["finished"]
                and a.get("test_acc") is not None]
        for a in rows:
            t = max(a["time_train"] or 0.0, 1e-2)
            ax.scatter(t, 100 * a["test_acc"], s=40)
            ax.annotate(a["method"], (t, 100 * a["test_acc"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if rows:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        ax.set_xlabel("training wall time (s, extraction excluded)")
        ax.set_ylabel(f"test accuracy, {rule} (%)")
        ax.set_title(_title(setting), fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, Path(path), dpi=120)


def _curves(results: dict, setting: tuple) -> dict[str, list[dict]]:
    """Per method: the selection curve averaged over finished seeds, by epoch."""
    by_method: dict[str, dict[int, list[dict]]] = {}
    for r in results["cells"]:
        if (r["data"], r["backbone"], r["noise"]) != setting or r["status"] != "done":
            continue
        for point in r.get("selection_curve", []):
            by_method.setdefault(r["method"], {}).setdefault(point["epoch"], []).append(point)
    return {m: [{"epoch": e, "precision": float(np.mean([p["precision"] for p in ps])),
                 "recall": float(np.mean([p["recall"] for p in ps]))} for e, ps in sorted(epochs.items())]
            for m, epochs in by_method.items()}


def plot_selection(results: dict, path: str | Path) -> Path:
    """Selection precision and recall per epoch, one line per selecting method; one row of panels per setting."""
    settings = _settings(results)
    fig, axes = plt.subplots(len(settings), 2, figsize=(11, 3.8 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        curves = _curves(results, setting)
        for metric, ax in zip(("precision", "recall"), row):
            for method, pts in curves.items():
                ax.plot([p["epoch"] for p in pts], [p[metric] for p in pts], marker="o", ms=3, label=method)
            ax.set_xlabel("selection epoch")
            ax.set_ylabel(f"selection {metric}")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{_title(setting)}: {metric}", fontsize=9)
            ax.grid(alpha=0.3)
            if curves:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no selecting method finished", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_png(fig, Path(path), dpi=120)


def write_plots(bench_dir: str | Path, results: dict) -> list[Path]:
    """Both plots into ``bench_dir``; returns their paths."""
    bench_dir = Path(bench_dir)
    return [plot_accuracy_vs_time(results, bench_dir / "accuracy_vs_time.png"),
            plot_selection(results, bench_dir / "selection.png")]
