"""Design study for the ``consensus`` method (issue 13): which detector, which fine-tuning.

Two parts, each printing a table and writing JSON under ``benchmarks/results/``:

``detect``  (cached features only, seconds per cell on a CPU): every detector component alone and
            combined (out-of-fold probes, kNN agreement, UNICON-LP co-training), against cleanlab's
            score/verdict and TURN's GCE probe + GMM. Reports the label-issue AUROC against the
            truth of the *training* labels, the issue F1 of each rule, and the accuracy of each
            candidate head on the *noisy validation* split. No test accuracy is computed.

``targets`` (cached features, seconds per cell) how accurate the fine-tuning targets of each relabel rule
            are against the training truth (the given labels, cleanlab's flags relabelled to the
            detector's prediction, the Bayes label posterior with and without calibration) and the
            is_label_issue F1 of each rule, the method's own verdict (its held-out noise-model choice), and
            diagnostics of the noise model (the posterior under the realised T and under an EM fit of T, the
            frozen features' nearest-neighbour class agreement). No test accuracy is computed.

``start``   fine-tuning's epoch-0 candidate under each ``head_targets`` rule (cached features, seconds per cell):
            each head's noisy-validation accuracy and its accuracy against the training images' true labels.

``estimate`` (cached features, seconds per cell) the out-of-fold probes' noise estimate that sets the co-trained
            heads' epochs (``short_cotrain_below``), beside the realised noise.

``prior``   (cached features, seconds per cell) the co-trained heads' class prior: UNICON-LP's uniform selection
            trains them on class-balanced labelled sets, so on long-tailed data they over-predict the tail and the
            posterior verdict under-flags it. Variants: the heads' class distributions reweighted per class until
            their mean is the given labels' class shares, those shares pulled back through the estimated noise
            process (the true classes' prior), the out-of-fold probes' mean class distribution, or the prior EM finds
            in the heads' own prediction. Verdict F1, posterior target accuracy and flagged share per given class,
            each way, against the training truth, and each noise model's held-out log-likelihood of the validation
            split's noisy labels.

``rates``   (cached features, seconds per cell) each given class's noise rate from cleanlab's confident joint on the
            prediction (``noise_rates=confident_joint``) or the mixture-proportion estimate on the out-of-fold probes
            (``noise_rates=mpe``): the noise each expects beside the realised noise, the accuracy of the first
            fine-tuning targets and the detector's verdict (``consensus-detect``'s: without and with the validation
            split's held-out choice), F1 and flagged share, against the training truth.

``final``   (reads committed bench cells; seconds per cell) ``consensus``'s verdict from what a finished run holds:
            each cell's detector is rerun on the cell's own config (checked against its saved detector score)
            beside the saved temporal ensemble of the fine-tuned model; the detector's verdict, the ensemble's own
            posterior, the posterior of fine-tuning's last targets and the rule that keeps the detector's verdict
            where its held-out test rejected the prediction's noise process, against the training truth.

``weights``  per fine-tuning epoch of finished ``consensus`` run folders: the model's share in the prediction
            (``model_weight_from=val``: refitted on the noisy validation split), its z against model_weight, the
            targets' arg-max accuracy against the training truth, noisy-validation and test accuracy.

``fft``     full runs through ``api.fit`` for a list of methods/variants × noise settings (the GPU
            comparison): val-selected test accuracy, best/last, wall time, AUROC, issue F1.

Examples (repository root)::

    PYTHONPATH=$PWD python benchmarks/new_method_design.py detect --seeds 0 1
    PYTHONPATH=$PWD python benchmarks/new_method_design.py fft --noises sym:0.2 asym:0.4 sym:0.9 \\
        --methods consensus turn ce-fft gce-fft unicon-lp --epochs-fft 5
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, md_table, method_variant, stamp, variant_slug  # noqa: E402

NOISES = ["sym:0.2", "asym:0.2", "inst:0.2", "asym:0.4", "inst:0.4", "sym:0.6", "sym:0.9"]
DATA = "/work/shared/data/cifar10-jpeg.zip"
COMBOS = [["oof", "knn"], ["oof", "cotrain"], ["knn30", "cotrain"], ["oof_gce", "cotrain"], ["oof_gce", "knn30"],
          ["oof", "knn", "cotrain"], ["oof_gce", "knn30", "cotrain"]]
GRID = dict(max_train=5000, max_test=2000, val_fraction=0.1, image_size=96)


def make_ctx(**kw):
    """A Context for a config without running a method (temporary run directory)."""
    from noisyft import api
    from noisyft.backbones import create_backbone
    from noisyft.config import FitConfig, parse_optim
    from noisyft.engine import resolve_device
    from noisyft.methods import Context
    from noisyft.run.rundir import RunDir

    cfg = dataclasses.replace(FitConfig(), progress=False, **kw)
    splits, val, _ = api.prepare_data(cfg)
    run = RunDir(tempfile.mkdtemp(prefix="design-"), cfg.identity(), dataclasses.asdict(cfg))
    run.start(None)
    bb = create_backbone(cfg.backbone, pretrained=cfg.pretrained, image_size=cfg.image_size)
    lp, fft = bb.hparams
    return Context(cfg, splits.train, splits.test, val, bb, run, resolve_device(cfg.device),
                   parse_optim(cfg.lp_optim, lp, "lp"), parse_optim(cfg.fft_optim, fft, "fft"))


def auroc(score: np.ndarray, wrong: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(wrong, -np.asarray(score))) if 0 < wrong.sum() < len(wrong) else float("nan")


def f1(flags: np.ndarray, wrong: np.ndarray) -> float:
    tp = float((flags & wrong).sum())
    return 2 * tp / max(flags.sum() + wrong.sum(), 1)


def detect_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    from noisyft.engine import head_logits
    from noisyft.losses import per_sample_ce
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import refurbish_head, refurbished_targets
    from noisyft.methods.linear_probe import linear_probe
    from noisyft.selection import fit_per_class_gmm

    ctx = make_ctx(data=data, noise=noise, seed=seed, **grid)
    feats, labels, C = ctx.feature_tensor("train"), ctx.train.labels, ctx.num_classes
    wrong = ctx.train.true_labels != labels
    val_f, val_y = ctx.feature_tensor("val"), ctx.val.labels
    c = ctx.cfg
    row: dict = {"noise": noise, "seed": seed, "realised": float(wrong.mean())}
    t = time.perf_counter()
    det = cd.detect(feats, labels, C, components=cd.COMPONENTS, folds=5, epochs=c.epochs_lp, optim=ctx.lp_optim,
                    batch_size=c.batch_size, seed=seed, k=20, knn_temperature=0.1)
    score, probs, unicon_head = cd.cotrain_scores(ctx)
    det.scores["cotrain"], det.probs["cotrain"] = score, probs
    row["t_detect"] = time.perf_counter() - t
    for k in (10, 30, 50):
        p = cd.knn_probs(feats, labels, C, k=k, temperature=0.1)
        det.scores[f"knn{k}"], det.probs[f"knn{k}"] = cd.given_prob(p, labels), p
    p = cd.oof_probs(feats, labels, C, folds=5, epochs=c.epochs_lp, optim=ctx.lp_optim, batch_size=c.batch_size, seed=seed,
                     loss="gce")
    det.scores["oof_gce"], det.probs["oof_gce"] = cd.given_prob(p, labels), p
    for name, s in det.scores.items():
        row[f"auroc_{name}"] = auroc(s, wrong)
    for parts in COMBOS:
        name = "+".join(parts)
        for how in ("rank", "mean"):
            s = cd.ensemble_score([det.scores[p] for p in parts], how)
            row[f"auroc_{name}_{how}"] = auroc(s, wrong)
            row[f"f1_{name}_{how}"] = f1(cd.clean_posterior(s, labels, C) <= 0.5, wrong)
    # cleanlab: the same out-of-fold probabilities, its verdict
    from cleanlab.filter import find_label_issues

    row["f1_cleanlab"] = f1(find_label_issues(labels, det.probs["oof"], n_jobs=1), wrong)
    row["auroc_cleanlab"] = row["auroc_oof"]
    # TURN's probe: GCE LP on all samples, per-class GMM on its CE losses
    gce = linear_probe(ctx, "gce", c.epochs_lp, q=c.gce_q)
    logits = head_logits(gce, ctx.features("train"), ctx.device)
    post = fit_per_class_gmm(per_sample_ce(logits, torch.as_tensor(labels)).numpy(), labels, C).clean_prob
    row["auroc_turn_probe"], row["f1_turn_probe"] = auroc(post, wrong), f1(post <= c.tau, wrong)
    # heads on the noisy validation split
    acc = lambda h: float((head_logits(h, val_f, ctx.device).argmax(1).numpy() == val_y).mean())  # noqa: E731
    row["val_gce_probe"], row["val_unicon"] = acc(gce), acc(unicon_head)
    for parts in (["cotrain"], ["cotrain", "knn30"], ["cotrain", "oof_gce", "knn30"]):
        name = "+".join(parts)
        s = cd.ensemble_score([det.scores[p] for p in parts], "mean")
        w = cd.clean_posterior(s, labels, C)
        p = np.mean([det.probs[q] for q in parts], axis=0)
        head = refurbish_head(feats, labels, refurbished_targets(labels, w, p, C), epochs=c.epochs_lp, optim=ctx.lp_optim,
                              batch_size=c.batch_size, seed=seed, init=unicon_head)
        row[f"val_refurb_{name}"] = acc(head)
    return row


def run_detect(args) -> None:
    rows = []
    for seed in args.seeds:
        for noise in args.noises:
            t = time.perf_counter()
            rows.append(detect_cell(noise, seed, args.data, GRID))
            print(f"{noise} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
            (RESULTS / "new_method_detect.json").write_text(json.dumps({**stamp(), "rows": rows}, indent=1, default=float))
    cols = ["noise", "seed"] + [k for k in rows[0] if k.startswith("auroc_")]
    print(md_table(rows, cols))
    print(md_table(rows, ["noise", "seed"] + [k for k in rows[0] if k.startswith(("f1_", "val_", "t_"))]))


def targets_cell(noise: str, seed: int, data: str, grid: dict, extra: dict | None = None) -> dict:
    """The consensus detector's targets under each relabel rule, scored against the training truth (``extra``: the
    detector's settings, e.g. ``{"components": "cotrain"}``); ``t_detector``: its wall seconds on cached features."""
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import ConsensusSettings, run_detector

    ctx = make_ctx(data=data, noise=None if noise == "none" else noise, seed=seed, method="consensus", **grid)
    ctx.feature_tensor("train")  # extraction (cached) outside the detector's time
    y, true = ctx.train.labels, ctx.train.true_labels
    t = time.perf_counter()
    det = run_detector(ctx, ConsensusSettings(**(extra or {})))
    score, w, probs, head = det[:4]
    t_detector = time.perf_counter() - t
    pred, wrong = probs.argmax(1), y != true
    flags = cd.issue_flags(probs, y)
    T = cd.noise_transition(probs, y)
    raw = cd.label_posterior(probs, y, T)
    cal = cd.label_posterior(cd.calibrate(probs, y, T), y, T)
    acc = lambda t: float((t == true).mean())  # noqa: E731
    row = {"noise": noise, "seed": seed, "realised": float(wrong.mean()), "est_noise_T": float(1 - np.mean(T[y, y])),
           "acc_given": acc(y), "acc_prediction": acc(pred), "acc_flagged": acc(np.where(flags, pred, y)),
           "acc_posterior_raw": acc(raw.argmax(1)), "acc_posterior": acc(cal.argmax(1)),
           "share_flagged": float(flags.mean()), "share_relabelled": float((cal.argmax(1) != y).mean()),
           "f1_cleanlab_flags": f1(flags, wrong), "f1_posterior_raw": f1(raw.argmax(1) != y, wrong),
           "f1_posterior": f1(cal.argmax(1) != y, wrong), "auroc_score": auroc(score, wrong), "t_detector": t_detector}
    # verdict rules on the same posterior (f1_posterior above: its arg-max is another class): P(given label wrong)
    # = 1 − post[given] above 0.5 (the binary Bayes rule), and the most probably wrong labels, as many as maximise the
    # F1 the posterior itself expects (ef1, the default since §11; no truth used)
    q = 1.0 - cal[np.arange(len(y)), y]
    for name, verdict in (("wrong", q > 0.5), ("ef1", cd.expected_f1_flags(q))):
        row[f"share_{name}"], row[f"f1_{name}"] = float(verdict.mean()), f1(verdict, wrong)
    row["expected_noise"] = float(q.mean())
    # diagnostics of the noise model (truth used to score, never to choose): the posterior under the realised T, under
    # the EM fit of T given the calibrated prediction; how often frozen-feature neighbours share a true class
    row.update(posterior_columns(probs, y, true, realised_transition(y, true, probs.shape[1]), "true_T"))
    T_em = em_transition(cd.calibrate(probs, y, T), y, T)
    row.update(posterior_columns(probs, y, true, T_em, "em_T"), est_noise_em_T=float(1 - np.mean(T_em[y, y])))
    row["knn2_true_agreement"] = knn_true_agreement(ctx.feature_tensor("train"), true, 2)
    # the method's own verdict (run_detector: with a validation split, the noise model that predicts its labels best)
    row["f1_verdict"], row["share_verdict"] = f1(det.issues, wrong), float(det.issues.mean())
    sel = ctx.run.records("selection")[-1]
    row["verdict_model"] = sel.get("verdict_noise_model")
    row.update({k: v for k, v in sel.items() if k.startswith("verdict_z_")})
    # the noise rate on samples the detector never trained on: the confident joint of the co-trained heads'
    # prediction on the noisy validation split, beside the realised rate there
    if ctx.val is not None and head is not None:
        from noisyft.engine import head_logits
        from noisyft.run.noise_rate import confident_joint_rates

        p_val = head_logits(head, ctx.features("val"), ctx.device).float().softmax(1).numpy()
        row["est_noise_val_cj"] = confident_joint_rates(ctx.val.labels, p_val)[0]
        row["est_noise_val_disagree"] = float((p_val.argmax(1) != ctx.val.labels).mean())
        if ctx.val.true_labels is not None:
            row["realised_val"] = float((ctx.val.labels != ctx.val.true_labels).mean())
    # the cleanlab method's own verdict: find_label_issues on its out-of-fold CE probes
    from cleanlab.filter import find_label_issues

    from noisyft.methods.cleanlab_peer import out_of_fold_probs

    oof = out_of_fold_probs(ctx, ctx.feature_tensor("train"), 5)
    row["f1_cleanlab_method"] = f1(find_label_issues(y, oof, n_jobs=1), wrong)
    # anchor-point noise estimates (Patrini et al. 2017) on the probes (≈ P(given label | x)) and on the prediction
    for q in (0.9, 0.97, 1.0):
        row[f"est_noise_anchor_oof_{q}"] = anchor_noise_rate(oof, y, q)
        row[f"est_noise_anchor_det_{q}"] = anchor_noise_rate(probs, y, q)
    return row


def anchor_noise_rate(p: np.ndarray, labels: np.ndarray, q: float) -> float:
    """The noise rate implied by anchor-point T (Patrini et al. 2017): row i = the class distribution of the sample at
    the q-quantile of p_i; rate = 1 − Σ_i prior_i T_ii with the given labels' class shares as the prior."""
    T = np.stack([p[np.argmin(np.where(p[:, i] >= np.quantile(p[:, i], q), p[:, i], np.inf))] for i in range(p.shape[1])])
    prior = np.bincount(labels, minlength=p.shape[1]) / len(labels)
    return float(1 - (prior * np.diag(T) / T.sum(1)).sum())


def realised_transition(given: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """The realised noise process T[k, j] = share of true class k given label j (truth: a diagnostic only)."""
    from noisyft.data.noise import transition_matrix

    counts = transition_matrix(true, given, num_classes) + 1e-6
    return counts / counts.sum(1, keepdims=True)


def em_transition(calibrated: np.ndarray, labels: np.ndarray, T: np.ndarray, iters: int = 50) -> np.ndarray:
    """The maximum-likelihood T given a fixed prediction (EM on Σ_i log Σ_k p_ik T[k, ȳ_i]), started from ``T``."""
    onehot = np.eye(T.shape[0])[labels]
    for _ in range(iters):
        post = calibrated * T[:, labels].T
        post /= post.sum(1, keepdims=True)
        counts = post.T @ onehot + 1e-6
        T = counts / counts.sum(1, keepdims=True)
    return T


def posterior_columns(probs: np.ndarray, y: np.ndarray, true: np.ndarray, T: np.ndarray, tag: str) -> dict:
    """Target accuracy, ef1 verdict F1 and expected noise of the posterior of ``probs`` under the noise process ``T``."""
    from noisyft.methods import consensus_detect as cd

    post = cd.label_posterior(cd.calibrate(probs, y, T), y, T)
    q = 1.0 - post[np.arange(len(y)), y]
    return {f"acc_posterior_{tag}": float((post.argmax(1) == true).mean()), f"expected_noise_{tag}": float(q.mean()),
            f"f1_ef1_{tag}": f1(cd.expected_f1_flags(q), y != true)}


def knn_true_agreement(feats: torch.Tensor, true: np.ndarray, k: int) -> float:
    """Share of each sample's k nearest neighbours (cosine, itself excluded) whose true class is its own."""
    z = torch.nn.functional.normalize(feats.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    idx = sim.topk(k, dim=1).indices.cpu().numpy()
    return float((true[idx] == true[:, None]).mean())


def collect_rows(name: str, produce) -> None:
    """Every row ``produce`` yields, computed lazily: results/NAME.json is rewritten after each row (a stopped run
    keeps its rows); the table is printed at the end."""
    rows = []
    for row in produce:
        rows.append(row)
        print(row, flush=True)
        (RESULTS / f"{name}.json").write_text(json.dumps({**stamp(), "rows": rows}, indent=1, default=float))
    print(md_table(rows, list(rows[0])))


def run_cells(args, cell) -> None:
    """``cell(noise, seed)`` → row for every seed × noise (:func:`collect_rows`)."""
    collect_rows(args.name, (cell(noise, seed) for seed in args.seeds for noise in args.noises))


@contextlib.contextmanager
def captured_verdict(seen: dict):
    """While open, every call of ``consensus.detector_verdict`` records its arguments in ``seen`` (det, predictors,
    val_labels, s): the detector's internals a design cell rescores, with the method's code left as it is."""
    from noisyft.methods import consensus as cons

    verdict = cons.detector_verdict

    def spy(det, predictors, probs, fitted, labels, val_labels, s, rates=None):
        seen.update(det=det, predictors=predictors, val_labels=val_labels, s=s)
        return verdict(det, predictors, probs, fitted, labels, val_labels, s, rates)

    cons.detector_verdict = spy
    try:
        yield seen
    finally:
        cons.detector_verdict = verdict


def run_targets(args) -> None:
    extra = _extras(args.extra)
    run_cells(args, lambda noise, seed: {"extra": extra, **targets_cell(noise, seed, args.data, GRID, extra)})


def prior_matched(probs: np.ndarray, prior: np.ndarray, iters: int = 100) -> np.ndarray:
    """``probs`` (N, C) reweighted per class, each row renormalised, until their mean class distribution is ``prior``
    (C,) (iterative proportional fitting; float64).

    Why: UNICON-LP's uniform selection trains the co-trained heads on class-balanced labelled sets, so their
    prediction carries a balanced class prior. On long-tailed data that inflates the tail classes, and the label
    posterior then keeps most wrong tail labels (results/new_method_design.md §14).
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    target = np.asarray(prior, dtype=np.float64) / np.sum(prior)
    w = np.ones(p.shape[1])
    for _ in range(iters):
        q = p * w
        q /= q.sum(1, keepdims=True)
        w *= target / np.clip(q.mean(0), 1e-12, None)
    q = p * w
    return q / q.sum(1, keepdims=True)


def em_prior(probs: np.ndarray, iters: int = 100, tol: float = 1e-8) -> np.ndarray:
    """The class prior π at which ``probs`` (N, C), trained under a uniform prior, reweighted by π and renormalised
    per row, average to π: Saerens et al. (2002)'s EM for a shifted prior (float64, (C,)).

    Why: it estimates the data's own class prior from the prediction alone, resting neither on the given labels'
    shares (which structured noise moves) nor on the estimated noise process (§14).
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    pi = np.full(p.shape[1], 1.0 / p.shape[1])
    for _ in range(iters):
        q = p * pi
        new = (q / q.sum(1, keepdims=True)).mean(0)
        done = np.abs(new - pi).max() < tol
        pi = new
        if done:
            break
    return pi


def class_prior(rule: str, labels: np.ndarray, probes: np.ndarray | None, num_classes: int,
                transition: np.ndarray | None = None, heads: np.ndarray | None = None) -> np.ndarray | None:
    """The class prior the co-trained heads are matched to: ``labels`` (the given labels' class shares), ``true``
    (those shares pulled back through the noise process: π solving π_given = Tᵀ π, clipped at 0.1 % and renormalised),
    ``probes`` (the out-of-fold probes' mean class distribution), ``em`` (:func:`em_prior` of the ``heads``), or None
    (``balanced``: the heads as trained)."""
    given = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes) / len(labels)
    if rule == "labels":
        return given
    if rule == "true" and transition is not None:
        pi = np.clip(np.linalg.lstsq(np.asarray(transition, dtype=np.float64).T, given, rcond=None)[0], 1e-3, None)
        return pi / pi.sum()
    if rule == "probes" and probes is not None:
        return np.asarray(probes, dtype=np.float64).mean(0)
    if rule == "em" and heads is not None:
        return em_prior(heads)
    return None


def prior_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    """The verdict and the targets with the co-trained heads as trained (``balanced``) and reweighted to each class
    prior of :func:`class_prior`, on the same detector run."""
    from noisyft.methods import consensus as cons
    from noisyft.methods import consensus_detect as cd

    with captured_verdict({}) as seen:
        ctx = make_ctx(data=data, noise=None if noise == "none" else noise, seed=seed, method="consensus", **grid)
        cons.run_detector(ctx, cons.ConsensusSettings())
    det, y, true = seen["det"], ctx.train.labels, ctx.train.true_labels
    wrong, C = y != true, det.probs["oof"].shape[1]
    row = {"noise": noise, "seed": seed, "realised": float(wrong.mean()),
           "wrong_per_class": [round(100 * float(wrong[y == k].mean())) for k in range(C)]}
    heads, heads_val = det.probs["cotrain"], det.val_probs.get("cotrain")
    transition = None  # the as-trained prediction's noise process (the first tag's), which `true` pulls back through
    held_out = {}  # tag → per-sample held-out log-likelihood of the validation split's noisy labels
    for tag in ("balanced", "labels", "true", "probes", "em"):
        prior = class_prior(tag, y, det.probs["oof"], C, transition, heads)
        det.probs["cotrain"] = heads if prior is None else prior_matched(heads, prior)
        if heads_val is not None:
            det.val_probs["cotrain"] = heads_val if prior is None else prior_matched(heads_val, prior)
        probs = np.mean([det.probs[c] for c in seen["predictors"]], axis=0)
        fitted = cd.fit_noise_model(probs, y)
        transition = fitted.transition if transition is None else transition
        issues, stats = cons.detector_verdict(det, seen["predictors"], probs, fitted, y, seen["val_labels"], seen["s"])
        post = cd.label_posterior(fitted.calibrated(probs), y, fitted.transition)
        if seen["val_labels"] is not None:
            val = np.mean([det.val_probs[c] for c in seen["predictors"]], axis=0)
            held_out[tag] = cd.heldout_loglik(val, seen["val_labels"], fitted.tau, fitted.transition)
            row.update({f"val_ll_{tag}": float(held_out[tag].mean()),
                        f"val_z_{tag}": cd.paired_z(held_out[tag] - held_out["balanced"])})
        row.update({f"f1_{tag}": f1(issues, wrong), f"share_{tag}": float(issues.mean()),
                    f"acc_targets_{tag}": float((post.argmax(1) == true).mean()),
                    f"model_{tag}": stats.get("verdict_noise_model"),
                    f"prior_{tag}": [round(100 * float(v)) for v in det.probs["cotrain"].mean(0)],
                    f"flagged_per_class_{tag}": [round(100 * float(issues[y == k].mean())) for k in range(C)]})
    return row


def run_prior(args) -> None:
    run_cells(args, lambda noise, seed: prior_cell(noise, seed, args.data, GRID))


def final_cell(path: Path) -> dict:
    """One committed ``consensus`` bench cell: its detector rerun on the cell's own config (checked against the
    cell's saved detector score), then verdicts from what the method holds when fine-tuning ends — the detector's
    calibrated prediction and the fine-tuned model's temporal ensemble — scored against the training truth."""
    from noisyft.methods import consensus as cons
    from noisyft.methods import consensus_detect as cd

    cfg = json.loads((path / "config.json").read_text())["config"]
    keys = ("data", "noise", "seed", "image_size", "max_train", "max_test", "val_fraction", "test_fraction",
            "epochs_lp", "backbone", "batch_size", "gce_q", "tau", "augment", "extra")
    ctx = make_ctx(method="consensus", **{k: cfg[k] for k in keys})
    s = cons.ConsensusSettings(**cfg["extra"])
    seen: dict = {}
    with captured_verdict(seen):
        det = cons.run_detector(ctx, s)
    saved = np.load(path / "consensus" / "detector_score.npy")
    y, true = ctx.train.labels, ctx.train.true_labels
    wrong = y != true
    calibrated, T = det.noise
    ens = np.load(path / "consensus" / "ensemble.npy").astype(np.float64)
    ens /= ens.sum(1, keepdims=True)
    mix = (1 - s.model_weight) * calibrated + s.model_weight * ens  # the method's final prediction()
    post = cd.label_posterior(mix, y, T)  # the method's final targets' posterior
    verdicts = {"detector": det.issues, "ensemble": cd.bayes_issues(ens, y)[1], "mix": cd.bayes_issues(mix, y)[1],
                "mix_detector_T": cd.posterior_issues(post, y)}
    # the method's rule (cons.final_verdict): the detector's verdict where its held-out test rejected the prediction's
    # noise model, which the final posterior (under the prediction's T) would inherit
    verdicts["final_unless_rejected"] = verdicts["mix_detector_T"] if cons.final_verdict(s, det) else det.issues
    # the same final posterior under the noise process with the out-of-fold probes' mixture-proportion noise rates
    # (noise_rates=mpe, §18), fine-tuning unchanged: the prediction calibrated under that process, mixed as above
    mpe = cd.fit_noise_model(det.probs, y, cons.noise_rates(seen["det"], det.probs, y, dataclasses.replace(
        s, noise_rates="mpe")))
    post_mpe = cd.label_posterior((1 - s.model_weight) * mpe.calibrated(det.probs) + s.model_weight * ens, y,
                                  mpe.transition)
    verdicts["mix_mpe_T"] = cd.posterior_issues(post_mpe, y)
    row = {"cell": path.name.split("zip__")[-1], "noise": cfg["noise"], "seed": cfg["seed"], "chosen": det.noise_model,
           "reproduced": bool(np.allclose(saved, det.score, atol=1e-6)), "realised": float(wrong.mean())}
    for name, flags in verdicts.items():
        row.update({f"f1_{name}": f1(flags, wrong), f"share_{name}": float(flags.mean())})
    # rankings (high = label looks right): the delivered label_quality, the ensemble's and the final posterior's
    # probability of the given label
    given = np.arange(len(y)), y
    rankings = {"label_quality": np.load(path / "consensus" / "final_score.npy"), "ensemble": ens[given],
                "final_posterior": post[given]}
    rankings["mean_quality_posterior"] = (rankings["label_quality"] + rankings["final_posterior"]) / 2
    rankings["rank_quality_posterior"] = cd.ensemble_score([rankings["label_quality"], rankings["final_posterior"]])
    rankings["mean_ensemble_posterior"] = (rankings["ensemble"] + rankings["final_posterior"]) / 2
    rankings["rank_quality_posterior_mpe"] = cd.ensemble_score([rankings["label_quality"], post_mpe[given]])
    row.update({f"auroc_{name}": auroc(score, wrong) for name, score in rankings.items()})
    row.update(symmetric_columns(det, seen, s, ens, rankings["label_quality"], y, wrong))
    return row


def symmetric_transition(T: np.ndarray, labels: np.ndarray, per_class: bool) -> np.ndarray:
    """T with its wrong labels spread evenly over the other classes: every row keeps its own diagonal (``per_class``)
    or all take the label-weighted mean diagonal (one noise rate, symmetric noise)."""
    c = len(T)
    diag = np.diag(T).copy() if per_class else np.full(c, np.bincount(labels, minlength=c) @ np.diag(T) / len(labels))
    return np.where(np.eye(c, dtype=bool), diag[:, None], ((1 - diag) / (c - 1))[:, None])


def offdiag_concentration(T: np.ndarray, weights: np.ndarray) -> float:
    """How concentrated T's wrong labels are: each row's off-diagonal shares' sum of squares (1/(C−1) when spread
    evenly, 1 when all go to one class), averaged with ``weights`` over the rows that have any."""
    off = np.where(np.eye(len(T), dtype=bool), 0.0, T)
    mass = off.sum(1)
    h = ((off / np.where(mass > 0, mass, 1.0)[:, None]) ** 2).sum(1)
    w = np.where(mass > 0, weights, 0.0)
    return float(h @ w / w.sum()) if w.sum() > 0 else 0.0


def symmetry_pvalue(probs: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, T: np.ndarray, draws: int = 200,
                    seed: int = 0) -> float:
    """A parametric-bootstrap test of "the noise is symmetric": labels drawn from the calibrated prediction, each
    flipped to a uniformly drawn other class at T's mean noise rate, give the null distribution of the estimated T's
    off-diagonal concentration (the estimator's own spread, including the model confusion it reads as noise); the
    p-value is the share of draws at least as concentrated as the observed T."""
    from noisyft.methods import consensus_detect as cd

    rng, (n, c) = np.random.default_rng(seed), calibrated.shape
    weights = np.bincount(labels, minlength=c).astype(float)
    rho = 1 - weights @ np.diag(T) / len(labels)
    observed, cum = offdiag_concentration(T, weights), np.cumsum(calibrated, 1)
    hits = 0
    for _ in range(draws):
        true = np.minimum((rng.random((n, 1)) > cum).sum(1), c - 1)
        shift = rng.integers(1, c, n)
        y = np.where(rng.random(n) < rho, (true + shift) % c, true)
        hits += offdiag_concentration(cd.noise_transition(probs, y), weights) >= observed
    return float((1 + hits) / (1 + draws))


def symmetric_columns(det, seen: dict, s, ens: np.ndarray, score: np.ndarray, y: np.ndarray, wrong: np.ndarray) -> dict:
    """§21: the final posterior under the confident joint's T made symmetric (one rate; each class's own rate; or
    halfway to one rate): each noise model's held-out log-likelihood on the validation split's noisy labels against
    the full T's (z), and the verdict and rankings it gives; fine-tuning unchanged (the same ensemble)."""
    from noisyft.methods import consensus as cons
    from noisyft.methods import consensus_detect as cd

    probs, val_labels = det.probs, seen["val_labels"]
    val_pred = cons.val_prediction(seen["det"], seen["predictors"])
    full = cd.fit_noise_model(probs, y)
    ll_full = cd.heldout_loglik(val_pred, val_labels, full.tau, full.transition)
    given, out = (np.arange(len(y)), y), {}
    sym = symmetric_transition(full.transition, y, False)
    variants = {"sym1": sym, "symc": symmetric_transition(full.transition, y, True), "half": (sym + full.transition) / 2}
    for name, T in variants.items():
        m = cd.NoiseModel(T, cd.fit_temperature(probs, y, T))
        out[f"z_{name}"] = cd.paired_z(cd.heldout_loglik(val_pred, val_labels, m.tau, T) - ll_full)
        post = cd.label_posterior((1 - s.model_weight) * m.calibrated(probs) + s.model_weight * ens, y, T)
        out[f"f1_{name}"] = f1(cd.posterior_issues(post, y), wrong)
        out[f"share_{name}"] = float(cd.posterior_issues(post, y).mean())
        out[f"auroc_post_{name}"] = auroc(post[given], wrong)
        out[f"auroc_mean_{name}"] = auroc((score + post[given]) / 2, wrong)
    # the method's rule (final_noise=auto): its noise model, chosen on the validation split's noisy labels
    chosen, stats = cons.final_noise_model(det, y, val_labels, dataclasses.replace(s, final_noise="auto"))
    out.update(final_noise=stats.get("final_noise"), final_noise_z=stats.get("final_noise_z"))
    if chosen is not None:
        calibrated, _ = det.noise
        post = cd.label_posterior((1 - s.model_weight) * chosen.calibrated(calibrated) + s.model_weight * ens, y,
                                  chosen.transition)
        out.update(f1_auto=f1(cd.posterior_issues(post, y), wrong), share_auto=float(cd.posterior_issues(post, y).mean()),
                   auroc_auto=auroc((score + post[given]) / 2, wrong))
    # the symmetry test (§21): symmetric T where it cannot reject symmetric noise at the 5 % level, else the full T
    out["sym_p"] = symmetry_pvalue(probs, full.calibrated(probs), y, full.transition)
    pick = "sym1" if out["sym_p"] >= 0.05 else None
    post = cd.label_posterior((1 - s.model_weight) * full.calibrated(probs) + s.model_weight * ens, y, full.transition)
    out["f1_symtest"] = out["f1_sym1"] if pick else f1(cd.posterior_issues(post, y), wrong)
    out["auroc_symtest"] = out["auroc_mean_sym1"] if pick else auroc((score + post[given]) / 2, wrong)
    out["auroc_symtest_post"] = out["auroc_post_sym1"] if pick else auroc((score + post[given]) / 2, wrong)
    if chosen is None:  # the full T's (the method before §21)
        out.update(f1_auto=f1(cd.posterior_issues(post, y), wrong), share_auto=float(cd.posterior_issues(post, y).mean()),
                   auroc_auto=auroc((score + post[given]) / 2, wrong))
    return out


def run_final(args) -> None:
    """Every ``consensus`` cell of the given bench folders (their cells/ folder), or the given run folders themselves."""
    paths = [path for root in map(Path, args.cells)
             for path in ([root] if (root / "config.json").exists() else sorted(root.glob("cells/*__consensus__s*")))]
    collect_rows(args.name, (final_cell(path) for path in paths))


def weights_row(path: Path) -> dict:
    """One finished consensus run folder's fine-tuning epochs: share, its z, targets' truth accuracy, val and test."""
    from noisyft.run.rundir import read_jsonl

    cfg = json.loads((path / "config.json").read_text())["config"]
    fft = [r for r in read_jsonl(path / "metrics.jsonl") if r["phase"] == "fft"]
    summary = json.loads((path / "summary.json").read_text())

    def col(key: str, rows: list) -> list:
        return [None if r.get(key) is None else round(float(r[key]), 3) for r in rows]

    return {"run": path.name, "noise": cfg.get("noise") or "none", "seed": cfg["seed"],
            "rule": ",".join(f"{k}={v}" for k, v in (cfg.get("extra") or {}).items()) or "default",
            "share": col("model_weight", fft[1:]), "z": col("model_weight_z", fft[1:]),
            "targets_true": col("target_true_acc", fft[1:]), "val": col("val_acc", fft), "test": col("test_acc", fft),
            "delivered": summary.get("delivered_epoch"), "test_acc": summary.get("test_acc"),
            "issue_f1": (summary.get("detection") or {}).get("issue_f1")}


def run_weights(args) -> None:
    collect_rows(args.name, (weights_row(Path(p)) for p in args.runs))


def start_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    """Fine-tuning's epoch-0 candidate (the pretrained backbone with a head on the cached features) under each
    ``head_targets`` rule, beside UNICON-LP's averaged head it starts from: each head's accuracy on the noisy
    validation split and, on the training images, against their true labels; its targets' arg-max accuracy."""
    from noisyft.engine import head_logits
    from noisyft.methods.consensus import ConsensusSettings, refurbish_head, run_detector, start_targets

    ctx = make_ctx(data=data, noise=noise, seed=seed, method="consensus", **grid)
    feats, y, true, c = ctx.feature_tensor("train"), ctx.train.labels, ctx.train.true_labels, ctx.cfg
    score, w, probs, unicon = run_detector(ctx, ConsensusSettings())[:4]
    val_f, val_y = ctx.feature_tensor("val"), ctx.val.labels
    row = {"noise": noise, "seed": seed, "realised": float((y != true).mean())}

    def score_head(name: str, head) -> None:
        row[f"val_{name}"] = float((head_logits(head, val_f, ctx.device).argmax(1).numpy() == val_y).mean())
        row[f"train_true_{name}"] = float((head_logits(head, feats, ctx.device).argmax(1).numpy() == true).mean())

    score_head("unicon", unicon)
    for rule in ("soft", "posterior"):
        t = start_targets(y, w, probs, ConsensusSettings(head_targets=rule))
        row[f"targets_true_{rule}"] = float((t.argmax(1).numpy() == true).mean())
        score_head(rule, refurbish_head(feats, y, t, epochs=c.epochs_lp, optim=ctx.lp_optim, batch_size=c.batch_size,
                                        seed=seed, init=unicon))
    return row


def run_start(args) -> None:
    run_cells(args, lambda noise, seed: start_cell(noise, seed, args.data, GRID))


def estimate_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    """The ``short_cotrain_below`` rule's input: the out-of-fold GCE probes' confident-joint noise estimate beside the
    realised noise, and the co-trained heads' epochs the default rule picks from it (cached features, seconds)."""
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import ConsensusSettings, cotrain_epochs
    from noisyft.run.noise_rate import confident_joint_rates

    ctx = make_ctx(data=data, noise=noise, seed=seed, method="consensus", **grid)
    y, s, c = ctx.train.labels, ConsensusSettings(), ctx.cfg
    oof = cd.oof_probs(ctx.feature_tensor("train"), y, ctx.num_classes, folds=s.folds, epochs=c.epochs_lp,
                       optim=ctx.lp_optim, batch_size=c.batch_size, seed=c.seed, loss=s.oof_loss)
    estimate = confident_joint_rates(y, oof)[0]
    return {"noise": noise, "seed": seed, "realised": float((y != ctx.train.true_labels).mean()),
            "estimate_oof": estimate, "cotrain_epochs": cotrain_epochs(s, c.epochs_lp, estimate, len(y))}


def rates_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    """The detector's noise process under each ``noise_rates`` rule, scored against the training truth; ``heldout``:
    whichever of the two :func:`heldout_rates` picks."""
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import ConsensusSettings, detector_verdict, noise_model_for, noise_rates, run_detector

    ctx = make_ctx(data=data, noise=None if noise == "none" else noise, seed=seed, method="consensus", **grid)
    seen: dict = {}
    with captured_verdict(seen):
        probs = run_detector(ctx, ConsensusSettings()).probs
    y, true = ctx.train.labels, ctx.train.true_labels
    wrong, share = y != true, np.bincount(y, minlength=ctx.num_classes) / len(y)
    row = {"noise": noise, "seed": seed, "realised": float(wrong.mean()), "acc_given": float(1 - wrong.mean())}
    fitted = {}  # rule → (its rates, the prediction's noise model under them), fitted once
    for rule in cd.NOISE_RATES:
        rates = noise_rates(seen["det"], probs, y, ConsensusSettings(noise_rates=rule))
        fitted[rule] = rates, noise_model_for(probs, y, ConsensusSettings(noise_rates=rule), rates)
    fitted["heldout"] = fitted[heldout_rates(seen, {r: m for r, (_, m) in fitted.items()}, row)]
    for rule, (rates, model) in fitted.items():
        s, tag = ConsensusSettings(noise_rates=rule if rule in cd.NOISE_RATES else "confident_joint"), rule.split("_")[0][:3]
        post = cd.label_posterior(model.calibrated(probs), y, model.transition)
        row[f"est_{tag}"] = float(1 - np.trace(cd.calibrated_joint(y, probs)) if rates is None else share @ rates)
        row[f"acc_targets_{tag}"] = float((post.argmax(1) == true).mean())
        for val, where in ((None, ""), (seen["val_labels"], "_val")):
            issues, stats = detector_verdict(seen["det"], seen["predictors"], probs, model, y, val, s, rates)
            row[f"f1{where}_{tag}"], row[f"flagged{where}_{tag}"] = f1(issues, wrong), float(issues.mean())
        row[f"model_val_{tag}"] = stats.get("verdict_noise_model")
    return row


def heldout_rates(seen: dict, models: dict, row: dict, z_min: float = 2.0) -> str:
    """The ``noise_rates`` rule under which the prediction's noise model predicts the validation split's noisy labels
    better (mpe only when it beats the confident joint's by ``z_min`` paired standard errors, as ``verdict_z``
    chooses a verdict's noise model; ``models``: rule → the prediction's noise model under its rates); the test's z goes into ``row`` as ``noise_rates_z``. A rule tried in §20, not
    a setting: the split could not tell the two apart."""
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import val_prediction

    val = val_prediction(seen["det"], seen["predictors"])
    chosen, z = cd.choose_noise_model(models, dict.fromkeys(models, val), seen["val_labels"], "confident_joint", z_min)
    row["noise_rates_z"] = z["mpe"]
    return chosen


def structure_cell(noise: str, seed: int, data: str, grid: dict) -> dict:
    """§21 without fine-tuning: which noise process ``final_noise=auto`` picks from the detector alone (its z), and
    the detector's posterior's verdict and ranking under the full T and under the symmetric one, against the truth."""
    from noisyft.methods import consensus_detect as cd
    from noisyft.methods.consensus import ConsensusSettings, final_noise_model, run_detector

    ctx = make_ctx(data=data, noise=None if noise == "none" else noise, seed=seed, method="consensus", **grid)
    det = run_detector(ctx, ConsensusSettings())
    y, wrong = ctx.train.labels, ctx.train.true_labels != ctx.train.labels
    chosen, stats = final_noise_model(det, y, ctx.val.labels if ctx.val is not None else None, ConsensusSettings())
    calibrated, T = det.noise
    sym = cd.symmetric_noise_model(calibrated, y, T)
    row = {"noise": noise, "seed": seed, "realised": float(wrong.mean()), "detector_noise_model": det.noise_model,
           "final_noise": stats.get("final_noise"), "final_noise_z": stats.get("final_noise_z")}
    for tag, post in (("full", cd.label_posterior(calibrated, y, T)),
                      ("sym", cd.label_posterior(sym.calibrated(calibrated), y, sym.transition))):
        row[f"f1_{tag}"] = f1(cd.posterior_issues(post, y), wrong)
        row[f"auroc_{tag}"] = auroc(post[np.arange(len(y)), y], wrong)
    return row


def run_structure(args) -> None:
    grid = {**GRID, "image_size": args.image_size, "max_train": args.max_train}
    run_cells(args, lambda noise, seed: structure_cell(noise, seed, args.data, grid))


def run_rates(args) -> None:
    grid = {**GRID, "image_size": args.image_size, "max_train": args.max_train}
    run_cells(args, lambda noise, seed: rates_cell(noise, seed, args.data, grid))


def run_estimate(args) -> None:
    grid = {**GRID, "image_size": args.image_size, "max_train": args.max_train, "max_test": args.max_test}
    run_cells(args, lambda noise, seed: estimate_cell(noise, seed, args.data, grid))


def _extras(pairs) -> dict:
    """``KEY=VALUE`` strings → settings, each value parsed by :func:`_value`."""
    return {k: _value(v) for k, v in (kv.split("=", 1) for kv in pairs)}


def _value(text: str):
    """A variant's ``KEY=VALUE`` value: JSON where it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_fft(args) -> None:
    from noisyft import api
    from noisyft.run.summary import delivered_block

    rows = []
    out_root = Path(args.out)
    for seed in args.seeds:
        for noise in args.noises:
            for spec in args.methods:
                method, settings = method_variant(spec)
                extra, name = _extras(settings), variant_slug(spec)
                res = api.fit(data=args.data, noise=None if noise == "none" else noise, method=method, seed=seed,
                              epochs_fft=args.epochs_fft, out=str(out_root / f"{name}-{noise.replace(':', '')}-s{seed}"), progress=False,
                              extra=extra, **GRID)
                s, d = res.summary, res.summary.get("detection", {})
                block = delivered_block(s) or {}
                row = {"noise": noise, "seed": seed, "method": spec, "val": block.get("val_selected_val_acc"),
                       "val_sel": s.get("test_acc"), "best": block.get("best_test_acc"), "last": block.get("last_test_acc"),
                       "time": s["timings"]["total"] - s["timings"].get("extraction", 0.0),
                       "auroc": d.get("auroc"), "issue_f1": d.get("issue_f1")}
                rows.append(row)
                print(row, flush=True)
                (RESULTS / f"{args.name}.json").write_text(json.dumps({**stamp(), "rows": rows}, indent=1, default=float))
    print(md_table(rows, ["noise", "seed", "method", "val", "val_sel", "best", "last", "time", "auroc", "issue_f1"]))


def _subcommand(sub, cmd: str, seeds: list[int], name: str | None = None, sized: bool = False):
    """A subcommand with the cell loop's arguments: noise settings, seeds, data (and the results' name, the image
    size and training-set cap when it takes them)."""
    p = sub.add_parser(cmd)
    p.add_argument("--noises", nargs="+", default=NOISES)
    p.add_argument("--seeds", nargs="+", type=int, default=seeds)
    p.add_argument("--data", default=DATA)
    if name is not None:
        p.add_argument("--name", default=name)
    if sized:
        p.add_argument("--image-size", type=int, default=GRID["image_size"])
        p.add_argument("--max-train", type=int, default=GRID["max_train"])
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _subcommand(sub, "detect", [0, 1])
    t = _subcommand(sub, "targets", [0], "new_method_targets", sized=True)
    t.add_argument("--extra", nargs="*", default=[],
                   help="the detector's settings KEY=VALUE (ConsensusSettings), e.g. components=cotrain")
    _subcommand(sub, "start", [0, 1], "new_method_start")
    _subcommand(sub, "rates", [0], "noise_rates", sized=True)
    _subcommand(sub, "structure", [0, 1, 2], "final_noise_detector", sized=True)
    _subcommand(sub, "prior", [0], "prior_matched", sized=True)
    e = _subcommand(sub, "estimate", [0, 1, 2], "cotrain_rule_estimates", sized=True)
    e.add_argument("--max-test", type=int, default=GRID["max_test"])
    f = _subcommand(sub, "fft", [0], "new_method_fft", sized=True)
    f.add_argument("--methods", nargs="+", default=["consensus", "turn", "ce-fft", "gce-fft", "elr-fft", "unicon-lp"],
                   help="method names, optionally with extra settings: 'consensus?fft_loss=gce&lr_scale=0.5'")
    f.add_argument("--epochs-fft", type=int, default=5)
    f.add_argument("--out", default="runs/new-method-design")
    f.add_argument("--max-test", type=int, default=GRID["max_test"])
    fin = sub.add_parser("final")
    fin.add_argument("cells", nargs="+", help="bench output folders whose consensus cells to read (their cells/ folder), "
                     "or consensus run folders")
    fin.add_argument("--name", default="verdict_final")
    wts = sub.add_parser("weights")
    wts.add_argument("runs", nargs="+", help="finished consensus run folders")
    wts.add_argument("--name", default="model_weight_epochs")
    args = ap.parse_args()
    if args.cmd == "final":
        run_final(args)
    elif args.cmd == "weights":
        run_weights(args)
    elif args.cmd == "fft":
        GRID.update(max_train=args.max_train, max_test=args.max_test, image_size=args.image_size)
        run_fft(args)
    elif args.cmd == "targets":
        GRID.update(image_size=args.image_size, max_train=args.max_train)
        run_targets(args)
    elif args.cmd == "prior":
        GRID.update(image_size=args.image_size, max_train=args.max_train)
        run_prior(args)
    elif args.cmd == "rates":
        run_rates(args)
    elif args.cmd == "structure":
        run_structure(args)
    elif args.cmd == "start":
        run_start(args)
    elif args.cmd == "estimate":
        run_estimate(args)
    else:
        run_detect(args)


if __name__ == "__main__":
    main()
