"""The report's matplotlib figures (Agg backend: no display needed), each saved as one PNG.

Every function takes plain arrays/records and a path, draws one figure, writes
it and returns the path, so the HTML page only decides what to show.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from noisyft.figures import plt, save_png
from noisyft.run.losses import component_densities, stage_title, tau_crossings

CLEAN_COLOUR, NOISY_COLOUR, TAU_COLOUR = "#1f77b4", "#d62728", "#2ca02c"


# ---------------------------------------------------------------- loss histograms


def draw_class_losses(ax, losses: np.ndarray, labels: np.ndarray, gmm: dict, c: int, name: str,
                      wrong: Optional[np.ndarray] = None, title: str = "") -> None:
    """One class: histogram of its losses (split by truly right/wrong label when known), GMM components, τ."""
    mine = labels == c
    x = losses[mine].astype(np.float64)
    keep = np.isfinite(x)
    x = x[keep]
    status = gmm["status"][c] if c < len(gmm["status"]) else "empty"
    ax.set_title(f"{title}{name} (n={int(mine.sum())})" + ("" if status == "fit" else f" [{status}]"), fontsize=9)
    if x.size == 0:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
        return
    lo, hi = float(x.min()), float(x.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    bins = np.linspace(lo - pad, hi + pad, 31)
    if wrong is not None:
        w = wrong[mine][keep]
        ax.hist([x[~w], x[w]], bins=bins, stacked=True, density=True, color=[CLEAN_COLOUR, NOISY_COLOUR],
                alpha=0.55, label=["label correct", "label wrong"])
    else:
        ax.hist(x, bins=bins, density=True, color="0.6", alpha=0.7, label="losses")
    grid = np.linspace(bins[0], bins[-1], 400)
    dens = component_densities(grid, gmm, c)
    if dens is not None:
        ax.plot(grid, dens.sum(0), color="0.3", lw=2.5, alpha=0.35, label="GMM mixture")
        ax.plot(grid, dens[0], color=CLEAN_COLOUR, lw=1.5, ls="--", label="GMM clean component")
        ax.plot(grid, dens[1], color=NOISY_COLOUR, lw=1.5, ls="--", label="GMM noisy component")
        for k, t in enumerate(tau_crossings(grid, dens, gmm["tau"])):
            ax.axvline(t, color=TAU_COLOUR, lw=1.5, label=f"posterior = τ ({gmm['tau']:g})" if k == 0 else None)
    ax.set_xlabel("CE loss", fontsize=8)
    ax.tick_params(labelsize=7)


def loss_histograms(stages: dict[str, tuple[np.ndarray, dict]], labels: np.ndarray, classes: Sequence[str],
                    shown: Sequence[int], path: Path, wrong: Optional[np.ndarray] = None) -> Path:
    """Rows = the ``shown`` classes, columns = stages (e.g. first selection epoch and final)."""
    names = list(stages)
    fig, axes = plt.subplots(len(shown), len(names), figsize=(4.2 * len(names), 2.9 * len(shown)), squeeze=False)
    for j, stage in enumerate(names):
        losses, gmm = stages[stage]
        for i, c in enumerate(shown):
            title = f"{stage_title(stage)}\n" if i == 0 else ""
            draw_class_losses(axes[i, j], losses, labels, gmm, c, classes[c], wrong, title)
    fig.tight_layout()
    _legend_below(fig, axes)
    return save_png(fig, path)


def class_grid(losses: np.ndarray, gmm: dict, labels: np.ndarray, classes: Sequence[str], cls: Sequence[int],
               path: Path, wrong: Optional[np.ndarray] = None, title: str = "") -> Path:
    """Up to 16 classes of one stage on a 4×4 grid (the all-classes pages)."""
    cols = min(4, len(cls))
    rows = -(-len(cls) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax, c in zip(axes.flat, cls):
        draw_class_losses(ax, losses, labels, gmm, c, classes[c], wrong)
    for ax in list(axes.flat)[len(cls):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _legend_below(fig, axes)
    return save_png(fig, path, dpi=72)


def _legend_below(fig, axes) -> None:
    handles, seen = [], set()
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen:
                seen.add(lab)
                handles.append((h, lab))
    if handles:  # below the figure; savefig(bbox_inches="tight") grows the image to include it
        fig.legend(*zip(*handles), loc="upper center", ncol=min(6, len(handles)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))


# ---------------------------------------------------------------- curves


def selection_curves(records: list[dict], path: Path) -> Path:
    """Selected / GMM-clean / N_min counts per epoch and, when truth is known, precision/recall/F1."""
    epochs = [r["epoch"] for r in records]
    with_truth = any("precision" in r for r in records)
    fig, axes = plt.subplots(1, 2 if with_truth else 1, figsize=(11 if with_truth else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("selected", "selected (trained on)"), ("gmm_clean", "GMM clean (posterior > τ)"),
                       ("n_min", "N_min per class")):
        if any(key in r for r in records):
            ax.plot(epochs, [r.get(key, np.nan) for r in records], marker="o", label=label)
    ax.set(xlabel="FFT epoch", ylabel="samples", title="Selected samples")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    if with_truth:
        ax = axes[0, 1]
        for key, colour in (("precision", "C0"), ("recall", "C1"), ("f1", "C2")):
            ax.plot(epochs, [r.get(key, np.nan) for r in records], marker="o", color=colour, label=f"selected {key}")
            if any(f"gmm_{key}" in r for r in records):
                ax.plot(epochs, [r.get(f"gmm_{key}", np.nan) for r in records], ls="--", color=colour,
                        label=f"GMM-clean {key}")
        ax.set(xlabel="FFT epoch", ylim=(0, 1.02), title="Selection vs. true labels")
        ax.legend(fontsize=8)
    for a in axes.flat:
        a.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return save_png(fig, path)


def accuracy_curves(records: list[dict], path: Path) -> Path:
    """Test/val accuracy and training loss per epoch; LP epochs first, FFT epochs continue the count."""
    steps = np.arange(1, len(records) + 1)
    phases = [r.get("phase", "") for r in records]
    has_acc = any(k in r for r in records for k in ("test_acc", "val_acc"))
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 5.5, 3.6), squeeze=False)
    panels = [("test_acc", "val_acc")] if has_acc else []
    for ax, keys in zip(axes.flat, panels + [("train_loss",)]):
        for key, ls in zip(keys, ("-", "--")):
            for phase in dict.fromkeys(phases):
                idx = [i for i, p in enumerate(phases) if p == phase and key in records[i]]
                if idx:
                    ax.plot(steps[idx], [records[i][key] for i in idx], ls=ls, marker="." if len(idx) > 30 else "o",
                            label=f"{key.replace('_', ' ')} ({phase.upper()})")
        ax.set(xlabel="epoch (LP, then FFT continues)", title="Accuracy" if "acc" in keys[0] else "Training loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(steps[i] - 0.5, color="0.5", ls=":", lw=1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


# ---------------------------------------------------------------- images


def suspect_grid(images: list, captions: list[str], colours: list[str], path: Path, cols: int = 6) -> Path:
    """Thumbnails of the most suspect samples with their captions (red: truly wrong, green: truly right)."""
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap, colour in zip(axes.flat, images, captions, colours):
        ax.imshow(img)
        ax.set_title(cap, fontsize=7.5, color=colour)
    fig.tight_layout()
    return save_png(fig, path)


def tsne_pair(before: np.ndarray, after: np.ndarray, colour_labels: np.ndarray, classes: Sequence[str],
              path: Path, wrong: Optional[np.ndarray] = None, colour_by: str = "true class") -> Path:
    """Side-by-side 2-D embeddings before and after fine-tuning (the TURN paper's Fig. 2)."""
    k = len(classes)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "hsv")
    colour = cmap(colour_labels % cmap.N if k <= 20 else colour_labels / max(1, k - 1))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    for ax, emb, title in ((axes[0], before, "before fine-tuning (pre-trained features)"),
                           (axes[1], after, "after fine-tuning")):
        clean = np.ones(len(emb), bool) if wrong is None else ~wrong
        ax.scatter(emb[clean, 0], emb[clean, 1], c=colour[clean], s=9, alpha=0.8, linewidths=0)
        if wrong is not None and wrong.any():
            ax.scatter(emb[wrong, 0], emb[wrong, 1], c=colour[wrong], s=22, marker="x", linewidths=0.9,
                       label="given label wrong")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(c % cmap.N if k <= 20 else c / max(1, k - 1)),
                          label=classes[c]) for c in range(k)] if k <= 20 else []
    if wrong is not None and wrong.any():
        handles.append(plt.Line2D([], [], ls="", marker="x", color="k", label="given label wrong"))
    fig.suptitle(f"t-SNE of backbone features, coloured by {colour_by}", fontsize=11)
    fig.tight_layout()
    if handles:
        fig.legend(handles=handles, loc="upper center", ncol=min(10, len(handles)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    return save_png(fig, path)


# ---------------------------------------------------------------- noise rate

NOISE_SERIES = (("estimated", "estimated (flagged share)", "#ff7f0e"), ("confident_joint", "cleanlab confident joint", "#9467bd"),
                ("true", "true", "0.35"))


def noise_rate_bars(block: dict, path: Path) -> Path:
    """Per given class: the estimated, confident-joint and (when known) true label-noise rate, as grouped bars.

    ``block`` is ``summary.json``'s ``noise_rate``; the legend gives each series' overall rate. Wide class sets
    get a wider figure and vertical class names.
    """
    series = [(key, label, colour) for key, label, colour in NOISE_SERIES if key in block]
    names = list(block["estimated"]["per_class"])
    x = np.arange(len(names))
    width = 0.8 / len(series)
    top = 0.0
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 0.28 * len(names) * len(series) + 2)), 3.8))
    for i, (key, label, colour) in enumerate(series):
        per = block[key]["per_class"]
        vals = [np.nan if per.get(n) is None else 100 * per[n] for n in names]
        top = max([top] + [v for v in vals if np.isfinite(v)])
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, color=colour,
               label=f"{label}: {100 * block[key]['overall']:.1f}% overall")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90 if len(names) > 12 else 0, fontsize=8 if len(names) > 12 else 9)
    ax.set(ylabel="labels wrong (%)", xlabel="given class", title="Label-noise rate per given class")
    ax.set_ylim(0, max(1.0, 1.35 * top))  # headroom for the legend
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save_png(fig, path)
