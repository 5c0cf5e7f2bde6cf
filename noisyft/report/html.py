"""``noisyft report RUN_DIR``: one self-contained HTML page about a finished run.

Writes ``RUN_DIR/report/index.html`` plus its figures as PNGs next to it. The
page embeds every figure it shows as a base64 data URI, so ``index.html`` alone
is enough to share; the PNGs are there for slides and papers. Sections:

1. summary numbers (accuracies, detection metrics, label-noise rate, timings);
2. the label-noise rate per given class: estimated, cleanlab's confident joint and (when known) true, as bars;
3. per-class loss histograms with the fitted two-component GMM and the τ
   boundary, for the first selection epoch and the final model: the first
   ``classes_shown`` classes on the page and, when there are more classes, every
   class in ``report/classes/<stage>_<first>-<last>.png`` (16 classes per image,
   numbered from 1, linked from the page, not embedded);
4. selected count / precision / recall / F1 per selection epoch;
5. test (and val) accuracy and training loss per epoch, LP then FFT;
6. the 24 most suspect training images with given / predicted (/ true) class;
7. t-SNE of features before and after fine-tuning (TURN paper, Fig. 2).

Sections 6 and 7 need the training images, rebuilt from the run's config (see
:mod:`noisyft.report.embedding`); precision/recall need true labels; accuracy
needs a test or validation set. A part that does not apply is replaced by a
sentence saying why, and the page is written regardless.
"""
from __future__ import annotations

import base64
import html
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from noisyft.atomic import write_text
from noisyft.csvsafe import read_csv
from noisyft.errors import UserError
from noisyft.report import plots
from noisyft.run.files import (CONFIG, FINISHED_FILES, LABEL_ISSUES, LABELS, METRICS_LOG, MODEL, REPORT_DIR,
                               SELECTION_LOG, STATE, SUMMARY)
from noisyft.run.losses import list_stages, load_stage, stage_title
from noisyft.run.model import read_model_meta
from noisyft.run.rundir import read_jsonl, read_run_json
from noisyft.run.summary import accuracy_summary

log = logging.getLogger("noisyft")

N_SUSPECTS = 24
CLASSES_PER_GRID = 16


@dataclass
class RunView:
    """The parts of a finished run directory the report reads."""

    path: Path
    config: dict
    summary: dict
    metrics: list[dict]
    selection: list[dict]
    labels: pd.DataFrame  # labels.csv, training-set order
    issues: pd.DataFrame  # label_issues.csv, most suspect first
    classes: list[str]

    @property
    def given(self) -> np.ndarray:
        return self.labels["given_label"].to_numpy()

    @property
    def true(self) -> Optional[np.ndarray]:
        return self.labels["true_label"].to_numpy() if "true_label" in self.labels else None

    @property
    def wrong(self) -> Optional[np.ndarray]:
        return None if self.true is None else self.true != self.given


def load_run(run_dir: str | Path) -> RunView:
    """Read a finished run; UserError (one line) for anything that is not one."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such run directory")
    state = read_run_json(d / STATE, {})
    state = state if isinstance(state, dict) else {}
    missing = [n for n in FINISHED_FILES if not (d / n).exists()]
    if "done" not in state.get("finished", []) or missing:
        raise UserError(f"{d} is not a finished noisyft run (missing: {', '.join(missing) or 'done in state.json'}); "
                        f"run `noisyft fit --out {d}` to completion first")
    try:
        classes = read_model_meta(d / MODEL)["classes"]
        labels = read_csv(d / LABELS, dtype={"id": str}).sort_values("index").reset_index(drop=True)
        config = read_run_json(d / CONFIG)["config"]
        return RunView(d, config, read_run_json(d / SUMMARY), read_jsonl(d / METRICS_LOG),
                       read_jsonl(d / SELECTION_LOG), labels, read_csv(d / LABEL_ISSUES, dtype={"id": str}),
                       classes)
    except UserError:
        raise
    except Exception as e:  # a damaged or foreign file: one line, not a traceback
        raise UserError(f"{d} is not a readable noisyft run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"is the run folder damaged?") from None


# ---------------------------------------------------------------- HTML helpers


def _e(x) -> str:
    return html.escape(str(x))


def _img(path: Path, alt: str) -> str:
    """An <img> with the PNG embedded as a data URI (``data-file`` names the PNG beside the page)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" data-file="{_e(path.name)}">'
            f"<figcaption>{_e(alt)}</figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _table(rows: list[tuple], header: Optional[tuple] = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


# ---------------------------------------------------------------- sections


def summary_section(run: RunView, out: Path) -> str:
    """Headline numbers as tables: the run, accuracies, detection, selection, timings."""
    s = run.summary
    acc = accuracy_summary(run.metrics, s.get("delivered_epoch"))  # from the log, so runs older than the per-phase summary keys show them too
    keys = ("method", "backbone", "data", "noise", "realised_noise", "n_train", "n_test", "seed")
    rows = [(k.replace("_", " "), s[k]) for k in keys if s.get(k) is not None]
    if "test_acc" in acc:
        rows.append((f"test acc ({acc['test_acc_rule']}, {acc['test_acc_epoch']})", acc["test_acc"]))
    rows.append(("flagged label issues", f"{int(run.issues['is_label_issue'].sum())} of {len(run.issues)}"))
    cards = [("Run", _table(rows))]
    phases = [(name, acc[key]) for name, key in (("linear probe", "probe"), ("fine-tuned", "fine_tuned"),
                                                  ("detector", "detector")) if key in acc]
    phases += sorted((acc.get("other_phases") or {}).items())
    if phases:
        cards.append(("Test accuracy by phase", _table(
            [(name, b["best_test_acc"], b["last_test_acc"],
              "" if "val_selected_test_acc" not in b else f"{b['val_selected_test_acc']:.4f} @ {b['val_selected_epoch']}")
             for name, b in phases], header=("phase", "best", "last", "val-selected"))))
    det = s.get("detection") or {}
    if det:
        cards.append(("Label-issue detection (vs. true labels)", _table([(k.replace("_", " "), v) for k, v in det.items()])))
    if run.selection:
        last = run.selection[-1]
        sel = [(k, last[k]) for k in ("epoch", "selected", "gmm_clean", "precision", "recall", "f1") if k in last]
        cards.append(("Last selection step", _table(sel)))
    rates = s.get("noise_rate") or {}
    if rates:
        cards.append(("Label-noise rate", _table(
            [(label, f"{100 * rates[k]['overall']:.1f}%") for k, label, _ in plots.NOISE_SERIES if k in rates]
            + [(f"|{k.replace('_', ' ')} − true|", f"{100 * e['overall']:.1f} points")
               for k, e in (rates.get("abs_error") or {}).items()])))
    timings = s.get("timings") or {}
    if timings:
        cards.append(("Timings (wall seconds)", _table([(k, f"{v:.1f}") for k, v in timings.items()])))
    html_ = '<div class="cards">' + "".join(f"<div><h3>{_e(t)}</h3>{tab}</div>" for t, tab in cards) + "</div>"
    return html_ + ("" if det else _note("True labels are unknown, so detection precision/recall/AUROC cannot be measured."))


def noise_rate_section(run: RunView, out: Path) -> str:
    """The label-noise rate per given class: estimated (flagged share), cleanlab's confident joint, true."""
    rates = run.summary.get("noise_rate")
    if not rates:
        return _note("This run's summary has no noise-rate estimate (runs made before noisyft estimated it).")
    parts = [_img(plots.noise_rate_bars(rates, out / "noise_rate.png"), "Label-noise rate per given class"),
             f"<p>Share of the training samples given each class whose label is wrong. Estimated: the share the "
             f"method flags ({_e(rates['estimated']['rule'])}).",
             f" Confident joint: cleanlab's calibrated confident joint on {_e(rates['confident_joint']['probs'])}."
             if "confident_joint" in rates else "", "</p>"]
    if "true" not in rates:
        parts.append(_note("True labels are unknown, so the real noise rate cannot be shown beside the estimates."))
    return "".join(parts)


def losses_section(run: RunView, out: Path, classes_shown: int) -> str:
    """Loss histograms + GMM + τ for the first selection epoch and the final model."""
    stages = list_stages(run.path)
    page_stages = [s for s in stages if s != "final"][:1] + (["final"] if "final" in stages else [])
    if not page_stages:
        return _note("This run saved no per-sample losses (runs made before noisyft saved them cannot be drawn).")
    loaded = {s: load_stage(run.path, s) for s in page_stages}
    shown = list(range(min(classes_shown, len(run.classes))))
    parts = [f"<p>Per-sample cross-entropy loss of the training samples labelled with each class; the dashed curves are "
             f"the two GMM components (clean = lower mean), the green line where the clean posterior equals "
             f"τ = {_e(loaded[page_stages[-1]][1]['tau'])} (left of it: selected as clean). "
             + ("Bars are split by whether the given label is truly right or wrong.</p>" if run.wrong is not None
                else "True labels are unknown, so the bars are not split by correctness.</p>"),
             _img(plots.loss_histograms(loaded, run.given, run.classes, shown, out / "loss_histograms.png", run.wrong),
                  f"Loss histograms: first {len(shown)} of {len(run.classes)} classes")]
    if len(shown) == len(run.classes):
        return "".join(parts)
    links = []
    for stage, (losses, gmm) in loaded.items():
        for start in range(0, len(run.classes), CLASSES_PER_GRID):
            cls = list(range(start, min(start + CLASSES_PER_GRID, len(run.classes))))
            name = f"{stage}_{cls[0] + 1:04d}-{cls[-1] + 1:04d}.png"
            plots.class_grid(losses, gmm, run.given, run.classes, cls, out / "classes" / name, run.wrong,
                             f"{stage_title(stage)}: classes {cls[0] + 1}–{cls[-1] + 1}")
            links.append(f'<a href="classes/{_e(name)}">{_e(stage_title(stage))}, classes {cls[0] + 1}–{cls[-1] + 1}</a>')
    parts.append("<p>All classes (separate PNGs beside this page, 16 classes each): " + " · ".join(links) + "</p>")
    return "".join(parts)


def selection_section(run: RunView, out: Path) -> str:
    if not run.selection:
        return _note(f"Method {run.summary.get('method')!r} logged no selection steps.")
    parts = [_img(plots.selection_curves(run.selection, out / "selection.png"), "Selection per FFT epoch")]
    if not any("precision" in r for r in run.selection):
        parts.append(_note("True labels are unknown, so selection precision/recall/F1 are not available."))
    cols = [c for c in ("epoch", "selected", "gmm_clean", "n_min", "precision", "recall", "f1", "gmm_precision",
                        "gmm_recall", "gmm_f1") if any(c in r for r in run.selection)]
    parts.append(_table([tuple(r.get(c, "") for c in cols) for r in run.selection], tuple(cols)))
    return "".join(parts)


def accuracy_section(run: RunView, out: Path) -> str:
    if not run.metrics:
        return _note("No per-epoch metrics were logged.")
    parts = [_img(plots.accuracy_curves(run.metrics, out / "accuracy.png"), "Accuracy and training loss per epoch")]
    if not any("test_acc" in r or "val_acc" in r for r in run.metrics):
        parts.append(_note("The run had no test or validation set, so only the training loss is shown."))
    return "".join(parts)


def suspects_section(run: RunView, out: Path, train) -> str:
    """The most suspect images with given, predicted (and true) class."""
    top = run.issues.head(N_SUSPECTS)
    images, captions, colours = [], [], []
    for r in top.itertuples(index=False):
        img = train.source.load(int(r.index)).convert("RGB")
        img.thumbnail((128, 128))
        images.append(np.asarray(img))
        cap = f"#{r.rank}  quality {r.label_quality:.2f}\ngiven: {r.given_class}\npred: {r.predicted_class}"
        truth = getattr(r, "true_class", None)
        if truth is not None and not pd.isna(truth):
            cap += f"\ntrue: {truth}"
        colours.append("black" if truth is None else ("#c00000" if r.is_truly_wrong else "#007000"))
        captions.append(cap)
    fig = plots.suspect_grid(images, captions, colours, out / "suspects.png")
    note = "Red captions: the given label is truly wrong; green: it is right." if "true_class" in top else \
        "True labels are unknown."
    cols = [c for c in ("rank", "id", "given_class", "predicted_class", "true_class", "label_quality") if c in top]
    return (_img(fig, f"The {len(top)} most suspect training labels") + f"<p>{_e(note)}</p>"
            + _table([tuple(v) for v in top[cols].itertuples(index=False)], tuple(cols)))


def tsne_section(run: RunView, out: Path, train, max_points: int, **kw) -> str:
    """t-SNE of a subsample's features before and after fine-tuning."""
    from noisyft.report.embedding import features_before_after, subsample, tsne

    rows = subsample(len(train), max_points)
    if len(rows) < 5:
        return _note(f"Too few points for t-SNE ({len(rows)}; --max-points {max_points}).")
    before, after = features_before_after(run.path, run.config, train, rows, **kw)
    by_true = run.true is not None
    colour = (run.true if by_true else run.given)[rows]
    wrong = None if run.wrong is None else run.wrong[rows]
    fig = plots.tsne_pair(tsne(before), tsne(after), colour, run.classes, out / "tsne.png", wrong,
                          "true class" if by_true else "given class")
    extra = "" if by_true else "True labels are unknown, so points are coloured by their given (possibly wrong) label. "
    if not any(r.get("phase") == "fft" for r in run.metrics):
        extra += "This run did no full fine-tuning, so both panels show the same backbone."
    return (_img(fig, f"t-SNE of {len(rows)} of {len(train)} training samples, before and after fine-tuning")
            + (f"<p>{_e(extra)}</p>" if extra else ""))


# ---------------------------------------------------------------- page

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}figure{margin:.5em 0}img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.cards{display:flex;flex-wrap:wrap;gap:0 2.5em}.cards h3{margin-bottom:.2em}
.note{background:#fff7e0;border-left:4px solid #e0b000;padding:.5em .8em}"""

# Counts the images that really decoded; the headless-browser test reads the result from the title.
_CHECK = """<script>window.addEventListener("load",function(){var a=Array.prototype.slice.call(document.images);
var ok=a.filter(function(i){return i.complete&&i.naturalWidth>0&&i.naturalHeight>0}).length;
document.title="noisyft report: "+ok+"/"+a.length+" images loaded";
document.body.setAttribute("data-images-loaded",ok+"/"+a.length);});</script>"""


def _guarded(title: str, build: Callable[[], str]) -> str:
    """A section's HTML, or a note if building it failed (the rest of the page is still written)."""
    try:
        return build()
    except Exception as e:  # a report must not die on one broken part
        log.warning("report section %r failed: %s", title, e, exc_info=log.isEnabledFor(logging.DEBUG))
        return _note(f"This section could not be produced: {type(e).__name__}: {e}")


def write_report(run_dir: str | Path, *, classes_shown: int = 4, max_points: int = 2000, batch_size: int = 128,
                 num_workers: Optional[int] = None, device: str = "auto", allow_remote_code: bool = False) -> Path:
    """Write ``RUN_DIR/report/index.html`` (figures embedded) and its PNGs; return the page's path.

    ``classes_shown`` classes get loss histograms on the page (all classes get linked
    PNGs); t-SNE uses at most ``max_points`` training samples (0 skips it).
    ``allow_remote_code`` (the caller's, never the run config's) lets a Hugging Face
    backbone run its own code.
    """
    if classes_shown < 1:
        raise UserError(f"--classes-shown must be at least 1, got {classes_shown}")
    if max_points < 0:
        raise UserError(f"--max-points must be >= 0, got {max_points}")
    run = load_run(run_dir)
    out = run.path / REPORT_DIR
    shutil.rmtree(out / "classes", ignore_errors=True)  # stale per-class pages of an earlier report
    out.mkdir(parents=True, exist_ok=True)
    train, why = _training_images(run)
    sections = [
        ("Summary", lambda: summary_section(run, out)),
        ("Label-noise rate", lambda: noise_rate_section(run, out)),
        ("Loss distributions and the GMM", lambda: losses_section(run, out, classes_shown)),
        ("Clean-sample selection", lambda: selection_section(run, out)),
        ("Accuracy per epoch", lambda: accuracy_section(run, out)),
        ("Most suspect labels", lambda: suspects_section(run, out, train) if train else _note(why)),
        ("Features before and after fine-tuning", lambda: _note("t-SNE skipped (--max-points 0).") if max_points == 0
         else tsne_section(run, out, train, max_points, batch_size=batch_size, num_workers=num_workers, device=device,
                           allow_remote_code=allow_remote_code)
         if train else _note(why)),
    ]
    body = "".join(f"<section><h2>{_e(t)}</h2>{_guarded(t, b)}</section>" for t, b in sections)
    title = f"noisyft report: {run.path.name}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
            f"<p>{_e(run.summary.get('method'))} on {_e(run.summary.get('data'))} with {_e(run.summary.get('backbone'))}; "
            f"run directory <code>{_e(run.path.resolve())}</code>.</p>{body}{_CHECK}</body></html>\n")
    write_text(out / "index.html", page)
    _make_readable(out)
    return out / "index.html"


def _make_readable(out: Path) -> None:
    """Atomic writes create files readable by their owner only; a report is meant to be shared."""
    mask = os.umask(0)
    os.umask(mask)
    for p in out.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~mask)


def _training_images(run: RunView):
    """``(training set, None)`` or ``(None, why not)`` when the images cannot be rebuilt."""
    from noisyft.report.embedding import rebuild_train

    try:
        return rebuild_train(run.config, run.labels), None
    except Exception as e:  # moved data, missing dataset, …: those sections are skipped
        return None, f"The training images could not be loaded ({type(e).__name__}: {e}), so this part is skipped."
