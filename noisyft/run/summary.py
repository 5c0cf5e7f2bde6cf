"""A run's ``summary.json``, and its accuracies phase by phase from its ``metrics.jsonl`` records.

Why a module of its own: the best test accuracy over *every* logged epoch mixes
models a method does not deliver (TURN's best epoch is often a linear-probe
epoch, yet TURN hands back the fine-tuned model). So the numbers are kept per
phase (``lp`` → ``probe``, ``fft`` → ``fine_tuned``; the CLIP detectors of DEFT
and clip-label-match log ``detect`` / ``zero-shot`` records with
``detector_test_acc`` → ``detector``) and the headline is the accuracy of what
the method delivers: the phase of the last record with a test accuracy, at the
epoch the noisy validation split selects when there is one (``--val-fraction``),
else at its last epoch (the saved model is the last one).

:func:`run_summary` writes these into ``summary.json``; ``bench`` and the HTML report
recompute them from ``metrics.jsonl``, so runs finished before these keys
existed tabulate the same way.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from noisyft.config import FitConfig
from noisyft.data.base import DataSplits
from noisyft.run.label_issues import detection_metrics
from noisyft.run.rundir import RunDir

# phase name in metrics.jsonl → summary block; phases not named here go under "other_phases"
PHASE_BLOCKS = {"lp": "probe", "fft": "fine_tuned"}
DETECTOR_PHASES = ("detect", "zero-shot")  # their records carry detector_test_acc / detector_val_acc
VAL_SELECTED, LAST_EPOCH = "val-selected", "last epoch"


def phase_block(records: list[dict], prefix: str = "", delivered: Optional[str] = None) -> Optional[dict]:
    """Best / last / validation-selected test accuracy over ``records`` (one phase, in log order).

    ``prefix`` picks the keys (``detector_`` reads ``detector_test_acc`` / ``detector_val_acc``).
    The validation-selected epoch is the first one with the highest validation accuracy, unless the method says
    which epoch its own validation rule delivered (``delivered``, e.g. ``fft:5``: ``consensus`` keeps its last epoch
    unless an earlier one is clearly better); then that one, and ``val_argmax_*`` keep the arg-max.
    None when no record has a test accuracy.
    """
    test_key, val_key = f"{prefix}test_acc", f"{prefix}val_acc"
    tests = [r for r in records if test_key in r]
    if not tests:
        return None
    best = max(tests, key=lambda r: r[test_key])
    block = {"phase": tests[-1]["phase"], "epochs": len(tests),
             "best_test_acc": best[test_key], "best_epoch": _tag(best),
             "last_test_acc": tests[-1][test_key], "last_epoch": _tag(tests[-1])}
    vals = [r for r in tests if val_key in r]
    if vals:
        chosen = argmax = max(vals, key=lambda r: r[val_key])
        pick = [r for r in vals if _tag(r) == delivered]
        if pick:
            chosen = pick[-1]
            block.update(val_argmax_test_acc=argmax[test_key], val_argmax_epoch=_tag(argmax))
        block.update(val_selected_test_acc=chosen[test_key], val_selected_epoch=_tag(chosen),
                     val_selected_val_acc=chosen[val_key])
    return block


def _tag(record: dict) -> str:
    return f"{record['phase']}:{record['epoch']}"


def accuracy_summary(metrics: list[dict], delivered_epoch: Optional[str] = None) -> dict:
    """The summary keys about accuracy, computed from a run's metrics records (and ``delivered_epoch``, the epoch
    the method's own validation rule delivered, where it has one: ``summary.json``'s key of that name).

    * ``probe`` / ``fine_tuned`` / ``detector`` (and ``other_phases``): :func:`phase_block` per phase;
    * ``delivered_phase``: the phase of the last record with a test accuracy (what the saved model is);
    * ``test_acc``: that phase's validation-selected test accuracy when validation was logged,
      else its last epoch's; ``test_acc_rule`` says which (``val-selected`` / ``last epoch``),
      ``test_acc_epoch`` where (``fft:3``).

    Empty when no record has a test accuracy (no test split).
    """
    out: dict = {}
    by_phase: dict[str, list[dict]] = {}
    for r in metrics:
        by_phase.setdefault(r.get("phase", "?"), []).append(r)
    for phase, recs in by_phase.items():
        block = phase_block(recs, delivered=delivered_epoch)
        if block is None:
            continue
        if phase in PHASE_BLOCKS:
            out[PHASE_BLOCKS[phase]] = block
        else:
            out.setdefault("other_phases", {})[phase] = block
    detector = phase_block([r for r in metrics if r.get("phase") in DETECTOR_PHASES], prefix="detector_")
    if detector is not None:
        out["detector"] = detector
    tests = [r for r in metrics if "test_acc" in r]
    if tests:
        delivered = tests[-1].get("phase", "?")
        block = phase_block(by_phase[delivered], delivered=delivered_epoch)
        out["delivered_phase"] = delivered
        if "val_selected_test_acc" in block:
            out.update(test_acc=block["val_selected_test_acc"], test_acc_rule=VAL_SELECTED,
                       test_acc_epoch=block["val_selected_epoch"])
        else:
            out.update(test_acc=block["last_test_acc"], test_acc_rule=LAST_EPOCH, test_acc_epoch=block["last_epoch"])
    return out


def delivered_block(acc: dict) -> Optional[dict]:
    """The phase block of the delivered model in an :func:`accuracy_summary` result (None without one)."""
    phase = acc.get("delivered_phase")
    if phase is None:
        return None
    return acc.get(PHASE_BLOCKS.get(phase, ""), (acc.get("other_phases") or {}).get(phase))


def headline_text(acc: dict) -> Optional[str]:
    """One line for the console, e.g. ``test acc 63.8 (last epoch; val-selected 64.1 @ fft:3) | probe best
    65.4 | fine-tuned best/last 64.0/63.8`` (percentages); None without test accuracy."""
    if "test_acc" not in acc:
        return None
    pct = lambda v: f"{100 * v:.1f}"
    delivered = delivered_block(acc) or {}
    # the delivered model is the last epoch's: say so, and give the validation pick beside it
    head = f"test acc {pct(delivered.get('last_test_acc', acc['test_acc']))} (last epoch"
    if "val_selected_test_acc" in delivered:
        head += f"; val-selected {pct(delivered['val_selected_test_acc'])} @ {delivered['val_selected_epoch']}"
    parts = [head + ")"]
    probe, tuned = acc.get("probe"), acc.get("fine_tuned")
    if probe is not None:
        parts.append(f"probe best {pct(probe['best_test_acc'])}" if tuned is not None else
                     f"probe best/last {pct(probe['best_test_acc'])}/{pct(probe['last_test_acc'])}")
    if tuned is not None:
        parts.append(f"fine-tuned best/last {pct(tuned['best_test_acc'])}/{pct(tuned['last_test_acc'])}")
    for phase, block in (acc.get("other_phases") or {}).items():
        parts.append(f"{phase} best/last {pct(block['best_test_acc'])}/{pct(block['last_test_acc'])}")
    if acc.get("detector") is not None:
        parts.append(f"detector best/last {pct(acc['detector']['best_test_acc'])}/{pct(acc['detector']['last_test_acc'])}")
    return " | ".join(parts)


def run_summary(cfg: FitConfig, run: RunDir, issues: pd.DataFrame, splits: DataSplits, noise_info: dict,
                noise_rate: Optional[dict] = None, delivered_epoch: Optional[str] = None) -> dict:
    """``summary.json``: the run, its accuracies phase by phase (:func:`accuracy_summary`), selection, detection,
    and the label-noise rate (``noise_rate``: estimated, confident joint, true; see :mod:`noisyft.run.noise_rate`).
    ``delivered_epoch``: the epoch the method's own validation rule delivered, where it has one (kept in the summary).

    ``test_acc`` is the accuracy of what the method delivers (validation-selected epoch of the delivered
    phase with ``--val-fraction``, else its last epoch); the linear probe's numbers are in ``probe`` and
    never stand for a fine-tuning method's accuracy.
    """
    summary = {"method": cfg.method, "backbone": cfg.backbone, "data": cfg.data, "noise": cfg.noise,
               "realised_noise": noise_info.get("realised_rate"), "n_train": len(splits.train),
               "n_test": 0 if splits.test is None else len(splits.test), "seed": cfg.seed,
               "timings": {**run.timings, "total": sum(run.timings.values())}}
    if delivered_epoch is not None:
        summary["delivered_epoch"] = delivered_epoch
    summary.update(accuracy_summary(run.records("metrics"), delivered_epoch))
    selection = run.records("selection")
    if selection:
        summary["selection"] = selection
    summary["detection"] = detection_metrics(issues)
    if noise_rate is not None:
        summary["noise_rate"] = noise_rate
    return summary
