"""The label-issue table: one row per training sample, most suspect first.

Column names follow cleanlab where they fit (``given_label``, ``predicted_label``,
``label_quality``, ``is_label_issue``) so existing code that reads cleanlab's
``find_label_issues`` output reads ours. ``label_quality`` scores how likely the
given label is clean (higher = more trustworthy) and ``is_label_issue`` is the
method's own verdict; both are each method's detector, so their meaning differs
by method (``noisyft methods -v`` prints each method's ``LABEL_QUALITY`` line):

* TURN, ``<loss>-lp``/``-fft``, ``small-loss-*``: the low-loss-component
  posterior of the per-class GMM on the final model's CE losses; issue ⇔ ≤ τ
  (the rule that keeps a sample out of TURN's fine-tuning subset).
* ``dividemix-lp*``: mean of the two heads' global-GMM clean posteriors; issue ⇔
  ≤ p_threshold (DivideMix's labelled/unlabelled rule).
* ``unicon-lp*``: 1 − JSD of the two heads' mean prediction to the given label;
  issue ⇔ outside UNICON's uniform selection on the final heads.
* ``cleanlab*``: self-confidence of out-of-fold probes; issue ⇔
  ``find_label_issues``' verdict.
* ``deft`` / ``clip-label-match``: the CLIP detector's clean probability;
  issue ⇔ the detector's verdict (not clean).

Rankings (``rank``, AUROC) compare across methods; the scores' scales do not.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch


def label_issues_frame(ids: Sequence[str], given: np.ndarray, logits: torch.Tensor | np.ndarray, clean_prob: np.ndarray,
                       classes: Sequence[str], *, tau: float = 0.6, true_labels: Optional[np.ndarray] = None,
                       is_issue: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Rank samples by how likely their given label is wrong.

    Sorted by ``label_quality`` ascending; ties broken by the model's probability
    of the given label (lower first). ``is_issue`` is the method's own verdict; without
    one a sample is an issue when ``clean_prob ≤ tau`` (the per-class GMM rule). ``index`` is the sample's position in the
    training set; ``id`` its path (or array index).
    """
    probs = torch.as_tensor(np.asarray(logits), dtype=torch.float32).softmax(1).numpy()
    given = np.asarray(given)
    pred = probs.argmax(1)
    names = np.asarray(classes, dtype=object)
    df = pd.DataFrame({
        "index": np.arange(len(given)), "id": list(ids),
        "given_label": given, "given_class": names[given],
        "predicted_label": pred, "predicted_class": names[pred],
        "label_quality": np.asarray(clean_prob, dtype=np.float64),
        "given_label_prob": probs[np.arange(len(given)), given],
        "is_label_issue": np.asarray(clean_prob) <= tau if is_issue is None else np.asarray(is_issue, dtype=bool),
    })
    if true_labels is not None:
        df["true_label"] = true_labels
        df["true_class"] = names[np.asarray(true_labels)]
        df["is_truly_wrong"] = np.asarray(true_labels) != given
    df = df.sort_values(["label_quality", "given_label_prob"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


def detection_metrics(df: pd.DataFrame) -> dict:
    """How well the ranking finds truly wrong labels (needs ``is_truly_wrong``).

    AUROC of ``1 − label_quality`` against truly wrong; precision/recall/F1 of
    ``is_label_issue``; precision among the top-k where k = the number truly wrong.
    """
    if "is_truly_wrong" not in df:
        return {}
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    truth = df["is_truly_wrong"].to_numpy()
    flagged = df["is_label_issue"].to_numpy()
    out = {"n_truly_wrong": int(truth.sum()), "n_flagged": int(flagged.sum())}
    if 0 < truth.sum() < len(truth):
        out["auroc"] = float(roc_auc_score(truth, -df["label_quality"].to_numpy() - 1e-6 * df["given_label_prob"].to_numpy()))
        k = int(truth.sum())
        out["precision_at_k"] = float(truth[:k].mean())
    p, r, f, _ = precision_recall_fscore_support(truth, flagged, average="binary", zero_division=0)
    out.update({"issue_precision": float(p), "issue_recall": float(r), "issue_f1": float(f)})
    return out
