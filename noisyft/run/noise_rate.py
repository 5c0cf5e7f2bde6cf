"""How noisy are the labels? The estimated label-noise rate, overall and per given class, beside the truth.

Every run's ``summary.json`` holds a ``noise_rate`` block (:func:`noise_rate_block`) with up to three rates,
each the share of training samples whose *given* label is wrong, overall and per given class
(``per_class[k]`` = P(label wrong | given label = k); a class nobody was given is ``null``):

* ``estimated``: the detector's own estimate, the share of samples the method flags
  (``is_label_issue`` of ``label_issues.csv``, each method's rule; ``rule`` says which);
* ``confident_joint``: cleanlab's confident-joint estimate (Northcutt et al. 2021), computed the
  standard way (as ``cleanlab.dataset.rank_classes_by_label_quality``'s "Label Noise" and
  ``overall_label_health_score``): the calibrated joint Q[given, true] of
  ``cleanlab.count.estimate_joint(labels, pred_probs)``; per class 1 − Q[k,k] / Σ_j Q[k,j], overall
  1 − trace(Q). ``probs`` says which probabilities went in: the method's detector's own class
  probabilities where it provides them (``MethodOutput.pred_probs``: out-of-fold for cleanlab, the
  consensus detector's distributions), else the softmax of the *final model* on the training set.
  Those are in-sample: a model that fine-tuned on noisy labels may have memorised them, which
  pulls this estimate towards 0;
* ``true`` (only when true labels are known): the share with given ≠ true, the realised noise rate.

``abs_error`` gives each estimate's absolute error against ``true`` overall and the mean over classes.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger("noisyft")

FINAL_MODEL = "final model softmax on the training set (in-sample)"


def class_rates(given: np.ndarray, wrong: np.ndarray, num_classes: int) -> tuple[float, list[Optional[float]]]:
    """(overall share of ``wrong``, share of ``wrong`` among the samples given each class; None for an unused class)."""
    given = np.asarray(given, dtype=np.int64)
    wrong = np.asarray(wrong, dtype=bool)
    if given.shape != wrong.shape:
        raise ValueError(f"labels and flags differ in length: {given.shape} vs {wrong.shape}")
    n = np.bincount(given, minlength=num_classes).astype(np.float64)
    hits = np.bincount(given, weights=wrong.astype(np.float64), minlength=num_classes)
    per = [float(h / c) if c else None for h, c in zip(hits, n)]
    return (float(wrong.mean()) if len(wrong) else 0.0), per


def calibrated_joint(given: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """cleanlab's confident joint calibrated to the label counts (``estimate_joint``), Q[given j, true k] summing to 1,
    from class probabilities clipped at 1e-12 and renormalised per row. Raises what cleanlab raises for probabilities
    it cannot use."""
    from cleanlab.count import estimate_joint

    p = np.clip(np.asarray(pred_probs, dtype=np.float64), 1e-12, None)
    return estimate_joint(np.asarray(given, dtype=np.int64), p / p.sum(1, keepdims=True))


def confident_joint_rates(given: np.ndarray, pred_probs: np.ndarray) -> tuple[float, list[Optional[float]]]:
    """cleanlab's noise rates from the calibrated confident joint Q[given, true]: (1 − trace Q, 1 − Q[k,k]/Q[k,:].sum()).

    Classes nobody was given get None. Raises what cleanlab raises for probabilities it cannot use.
    """
    given = np.asarray(given, dtype=np.int64)
    joint = calibrated_joint(given, pred_probs)
    rows = joint.sum(1)
    used = np.bincount(given, minlength=joint.shape[1]) > 0
    per = [float(1 - joint[k, k] / rows[k]) if used[k] and rows[k] > 0 else None for k in range(joint.shape[1])]
    return float(1 - np.trace(joint)), per


def _named(classes: Sequence[str], per: list[Optional[float]]) -> dict:
    return {str(name): rate for name, rate in zip(classes, per)}


def _error(est: dict, true: dict) -> dict:
    diffs = [abs(e - t) for e, t in zip(est["per_class"].values(), true["per_class"].values())
             if e is not None and t is not None]
    return {"overall": abs(est["overall"] - true["overall"]),
            "per_class_mean": float(np.mean(diffs)) if diffs else None}


def noise_rate_block(given: np.ndarray, classes: Sequence[str], flagged: np.ndarray, *, rule: str,
                     pred_probs: Optional[np.ndarray] = None, probs_source: str = FINAL_MODEL,
                     true_labels: Optional[np.ndarray] = None) -> dict:
    """The ``noise_rate`` block of ``summary.json`` (see the module doc); every array in training-set order.

    ``flagged``: each sample's ``is_label_issue``; ``rule``: what flags a sample (one line);
    ``pred_probs``: (N, C) class probabilities for the confident joint (skipped, with a warning, if cleanlab
    cannot use them); ``true_labels``: when known, the real rate and each estimate's error.
    """
    k = len(classes)
    overall, per = class_rates(given, flagged, k)
    block: dict = {"estimated": {"overall": overall, "per_class": _named(classes, per), "rule": rule}}
    if pred_probs is not None:
        try:
            overall, per = confident_joint_rates(given, pred_probs)
            block["confident_joint"] = {"overall": overall, "per_class": _named(classes, per), "probs": probs_source}
        except Exception as e:  # e.g. a class with a single sample: the estimate is optional, the run is not
            log.warning("confident-joint noise-rate estimate skipped (%s: %s)", type(e).__name__, e)
    if true_labels is not None:
        overall, per = class_rates(given, np.asarray(true_labels) != np.asarray(given), k)
        block["true"] = {"overall": overall, "per_class": _named(classes, per)}
        block["abs_error"] = {name: _error(block[name], block["true"]) for name in ("estimated", "confident_joint")
                              if name in block}
    return block


def noise_rate_text(block: Optional[dict]) -> Optional[str]:
    """One console line part, e.g. ``noise est. 21.3% (cleanlab CJ 19.8%; true 18.6%)``; None without a block."""
    if not block or "estimated" not in block:
        return None
    pct = lambda v: f"{100 * v:.1f}%"
    extra = [f"cleanlab CJ {pct(block['confident_joint']['overall'])}"] if "confident_joint" in block else []
    if "true" in block:
        extra.append(f"true {pct(block['true']['overall'])}")
    return f"noise est. {pct(block['estimated']['overall'])}" + (f" ({'; '.join(extra)})" if extra else "")
