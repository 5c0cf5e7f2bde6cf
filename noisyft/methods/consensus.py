"""``consensus``: a consensus label-issue detector on cached features, then fine-tuning on ALL samples
with labels refurbished by it; ``consensus-detect``: the detector alone (seconds).

Why: TURN trains on a class-balanced clean subset (about half the images), which costs more than
the noise at 5–40 % structured noise, and its fine-tuning can undo a better probe at high noise.
Here nothing is discarded; each sample's label is softened by how much the detector trusts it.

Algorithm (settings: :class:`ConsensusSettings`, read from ``extra``):

1. Detector (:mod:`noisyft.methods.consensus_detect`) on the cached training features: out-of-fold
   GCE probes and UNICON-LP's co-trained heads (kNN label agreement optional), each giving a score
   no model memorised. The consensus score is the mean of the ``score_components``' scores (default
   UNICON-LP's 1 − JSD alone: measured the best ranking at 4 of 5 noise settings; adding the probes
   lowered it at asym/inst-0.4). A per-class two-component GMM on it gives each sample's clean weight w_i; the mean of the
   components' class distributions is the detector's prediction p_i. The heads train half the ``epochs_lp`` when the
   probes' confident joint estimates < 50 % noise (``short_cotrain_below``) on ≥ 1,500 training samples
   (``short_cotrain_min_samples``): the longer they train, the more wrong labels they fit, while at high noise
   they need the epochs to find the few clean samples, and on small sets the MixMatch steps. (Opt-in,
   ``probes_predict_below=0.5``: at a higher estimate the probes leave the prediction to the heads; measured in
   new_method_design.md §10, not the default.)
2. A linear head, started from UNICON-LP's averaged head, is trained on the cached features toward the
   targets fine-tuning uses (``head_targets=posterior``, the default: the sharpened label posterior of step 3;
   ``soft``: t_i = w_i·onehot(ȳ_i) + (1 − w_i)·sharpen(p_i), the earlier rule, which trailed it on noisy
   validation at 14 of 21 settings × seeds and by 3.6 points against the training truth) (logged as one
   more ``lp`` epoch). On the pretrained backbone it is fine-tuning's epoch 0, a candidate for delivery.
3. Full fine-tuning of the whole model on every training sample for ``epochs_fft`` epochs, from a fresh
   head as the -fft baselines (``head_init=fresh``, the default: on the 96 px GPU grid its final ranking
   beat the refurbished start's at all seven noise settings, noisy validation tied). Targets
   (``relabel=posterior``, the default): the sharpened label posterior
   P(k | x_i, ȳ_i) ∝ p_ik · T[k, ȳ_i], where T (C × C) is the noise process estimated from cleanlab's
   confident joint on p: Bayes' rule decides per sample whether the prediction outweighs the label,
   so hard clean samples keep their label at low noise and the prediction wins at high noise. The
   loss is cross-entropy on these targets plus ELR's early-learning regulariser (λ 3, β 0.7: the best
   fine-tuning baseline on noisy validation at 20–40 % noise). ``relabel=flagged`` (the second
   design) gives cleanlab's flags sharpen(p_i) and keeps every other label: at 20 % noise it flagged
   25–30 % of the samples with precision 0.4–0.6 and its targets were no more accurate than the given
   labels. ``relabel=soft`` uses t_i above for every sample (the first design: it pulled clean
   samples towards the probe and trailed GCE/SCE/ELR-FFT by 4–7 noisy-validation points at 20 %
   noise). From the second epoch p_i mixes the detector's prediction with a temporal ensemble of the model's own predictions, collected on the augmented views during
   the training pass itself (no extra pass over the training images), each with half the say
   (``model_weight``; ``model_weight_from=val`` refits the share on the validation split's noisy labels every
   epoch: measured no better, new_method_design.md §19); the flags and w are re-estimated after each epoch.
4. The returned model is the last fine-tuning epoch, unless the checkpoint with the best noisy-validation
   accuracy (the step-2 head and every epoch are candidates) beats it on the split's samples by ``select_z`` (2)
   paired standard errors (:func:`delivered_checkpoint`): a small, noisy split's arg-max picks epochs by chance
   (64 px sym-0.9: 200 images, 81 % wrong). The label-issue
   ranking (``label_quality``) is the final consensus score (detector and temporal ensemble), with
   ``issues_from=final`` averaged with the last epoch's label posterior's probability of the given label (§15: mean
   AUROC 0.919 against 0.911); ``is_label_issue`` (``issues_from=final``): the labels the last epoch's label
   posterior (the detector's prediction mixed with the temporal ensemble, under the detector's T: fine-tuning's
   own final targets) makes most probably wrong, as many as maximise the F1 that posterior expects
   (new_method_design.md §15: F1 0.777 against the detector's 0.720 over 16 noisy settings). The detector's own
   verdict (``consensus-detect``'s, and
   ``consensus``'s where its held-out test rejects the prediction's T) uses the detector's posterior, out of
   sample as the confident joint needs. With a validation split that posterior's noise model is the prediction's
   unless the out-of-fold probes' or the heads' own predicts the split's noisy labels better by ``verdict_z`` (2)
   paired standard errors (:func:`detector_verdict`): at 80 % noise the heads have fitted part of the labels and
   the prediction's posterior flags ~60 %. With the other relabel rules: cleanlab's ``find_label_issues`` on the
   final prediction.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisyft import dist
from noisyft.config import OptimConfig
from noisyft.engine import generator, head_logits, hit_rate, train_head_epoch, train_image_epoch
from noisyft.errors import UserError
from noisyft.losses import ELR, reverse_ce
from noisyft.methods import consensus_detect as cd
from noisyft.methods.base import Context, MethodOutput, label_quality_doc
from noisyft.methods.mixmatch import sharpen
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings
from noisyft.options import POSITIVE, Range, option
from noisyft.run.noise_rate import confident_joint_rates
from noisyft.selection import selection_metrics

log = logging.getLogger("noisyft")
TAG = "consensus"


COMPONENTS = ("oof", "knn", "cotrain")


def _component_list(label: str, text: str) -> list[str]:
    """``"oof,cotrain"`` → ``["oof", "cotrain"]``; unknown or no component is a one-line UserError."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in COMPONENTS]
    if bad or not names:
        raise UserError(f"--extra {label}={text}: name components from {', '.join(COMPONENTS)}, comma-separated")
    return names


@dataclass(frozen=True)
class ConsensusSettings(MethodSettings):
    """Settings of ``consensus`` and ``consensus-detect`` (``--extra KEY=VALUE``); defaults measured in
    ``benchmarks/results/new_method_design.md`` on training labels and the noisy validation split."""

    EPOCHS_FFT = 5  # the -fft baselines' budget: same fine-tuning work as CE-FFT

    components: str = option("oof,cotrain", "components whose class distributions are averaged into the prediction p: "
                             "oof (out-of-fold probes), knn (neighbour agreement), cotrain (UNICON-LP heads)")
    score_components: str = option("cotrain", "components whose scores make the consensus score (the ranking and w)")
    cotrain_epochs: Optional[int] = option(None, "epochs of the co-trained UNICON-LP heads, warm-up included (null: "
                                           "the run's --epochs-lp, halved below short_cotrain_below)", range=Range(1, None))
    short_cotrain_below: float = option(0.5, "with cotrain_epochs null, the co-trained heads train half the --epochs-lp "
                                        "when the out-of-fold probes' confident-joint noise estimate is below this "
                                        "(0: never)", range=Range(0, 1))
    short_cotrain_min_samples: int = option(1500, "the halved co-training needs at least this many training samples "
                                            "(fewer: too few MixMatch steps; measured worse rankings at 900 and 100)",
                                            range=Range(0, None))
    probes_predict_below: float = option(1.0, "the out-of-fold probes' class distributions join the prediction p only "
                                         "while their confident-joint noise estimate is below this; at or above it "
                                         "the other components predict alone (1, the default: always join; 0.5 made "
                                         "the targets more accurate at 40-90 % noise but not the fine-tuned model: "
                                         "new_method_design.md §10)", range=Range(0, 1))
    probes_predict_min_samples: int = option(1500, "dropping the probes from the prediction needs at least this many "
                                             "training samples (fewer: the heads fit more of the labels, and the noise "
                                             "process estimated from their prediction alone understates the noise)",
                                             range=Range(0, None))
    folds: int = option(5, "folds of the out-of-fold probes", range=Range(2, None))
    head_batch_size: Optional[int] = option(None, "batch size of every linear head trained on the cached features (the "
                                            "out-of-fold probes, the co-trained heads, the refurbished head; null: the "
                                            "run's --batch-size)", range=Range(1, None))
    oof_loss: str = option("gce", "loss of the out-of-fold probes", choices=("ce", "gce", "sce", "elr"))
    knn_k: int = option(20, "neighbours of the kNN agreement (cosine, self excluded)", range=Range(1, None))
    knn_temperature: float = option(0.1, "neighbour vote weight exp(similarity / T)", range=POSITIVE)
    combine: str = option("mean", "how component scores combine: mean (of the scores) or rank (of their ranks)",
                          choices=("mean", "rank"))
    sharpen_T: float = option(0.5, "temperature sharpening of the predicted part of the targets", range=POSITIVE)
    ema: float = option(0.5, "temporal-ensemble momentum per epoch (0: last epoch only)", range=Range(0, 1, high_open=True))
    model_weight: float = option(0.5, "share of the model's temporal ensemble in the re-estimated score and prediction",
                                 range=Range(0, 1))
    model_weight_from: str = option("fixed", "the model's share in the prediction (the targets' class distribution): "
                                    "fixed (model_weight) or val (after every fine-tuning epoch, the share under which "
                                    "the detector's and the model's mixed prediction best explains the validation "
                                    "split's noisy labels through the noise process T; needs a validation split and "
                                    "relabel=posterior, else model_weight; the score keeps model_weight; measured no "
                                    "better: the split judges the model's held-out prediction, the mix uses its "
                                    "in-sample ensemble, new_method_design.md §19)",
                                    choices=("fixed", "val"))
    model_weight_z: float = option(2.0, "model_weight_from=val: a fitted share replaces model_weight only when it "
                                   "explains the split's labels better by at least this many paired standard errors "
                                   "of the log-likelihood (0: always the fitted share)", range=Range(0, None))
    issue_threshold: float = option(0.5, "clean weight above which a sample counts as clean in the logged selection",
                                    range=Range(0, 1))
    relabel: str = option("posterior", "which targets change: posterior (every target is the sharpened label posterior "
                          "P(class | x, given) ∝ prediction · T[class, given], T the noise process estimated from "
                          "cleanlab's confident joint), flagged (the samples cleanlab's find_label_issues flags on the "
                          "detector's prediction get the sharpened prediction, the rest keep their given label), soft "
                          "(every target is w·given + (1 − w)·prediction) or none (every sample keeps its given label)",
                          choices=("posterior", "flagged", "soft", "none"))
    noise_rates: str = option("confident_joint", "each given class's share of wrong labels in the noise process T: "
                              "confident_joint (cleanlab's calibrated confident joint on the prediction) or mpe (a "
                              "mixture-proportion estimate on the out-of-fold probes: how much less of the class's "
                              "probability its samples keep than other classes' look-alikes; the joint then gives only "
                              "where the wrong labels come from; measured: closer to the truth on CIFAR-10, far under "
                              "it on Fashion-MNIST's structured noise, new_method_design.md §18)", choices=cd.NOISE_RATES)
    relabel_min_conf: float = option(0.0, "a flagged sample is relabelled only when the prediction's top probability "
                                     "reaches this (0: every flag)", range=Range(0, 1))
    base_loss: str = option("ce", "loss on the targets: ce (soft cross-entropy), gce (generalised cross-entropy, q "
                            "from --gce-q, on the target distribution) or sce (symmetric cross-entropy: soft CE + "
                            "reverse CE −Σ p log t, log 0 := log 1e-4, as sce-fft with α = β = 1)",
                            choices=("ce", "gce", "sce"))
    head_init: str = option("fresh", "fine-tuning's starting head: fresh (random, as the -fft baselines) or refurbished "
                            "(the step-2 head, which is fine-tuning's epoch 0 either way)", choices=("fresh", "refurbished"))
    elr_lambda: float = option(3.0, "weight λ of the early-learning regulariser added to the fine-tuning loss (0: off)",
                               range=Range(0, None))
    elr_beta: float = option(0.7, "momentum β of the early-learning regulariser's running targets",
                             range=Range(0, 1, high_open=True))
    select_best: bool = option(True, "with a validation split, deliver a checkpoint chosen on it (the fine-tuning start "
                               "included; see select_z); off: the last epoch")
    select_z: float = option(2.0, "the best noisy-validation checkpoint is delivered instead of the last epoch only when "
                             "it beats the last on the split's samples by at least this many paired standard errors "
                             "of the accuracy difference (0: always the best)", range=Range(0, None))
    verdict_z: float = option(2.0, "with a validation split, is_label_issue comes from the noise model (prediction, "
                              "out-of-fold probes alone or co-trained heads alone) that predicts the split's noisy "
                              "labels best, when it beats the prediction's by at least this many paired standard "
                              "errors of the log-likelihood (a large value, e.g. 1e9: always the prediction's)",
                              range=Range(0, None))
    issues_from: str = option("final", "where consensus's is_label_issue comes from: final (the labels most probably "
                              "wrong under the posterior of the last fine-tuning epoch's targets: the detector's "
                              "prediction mixed with the fine-tuned model's temporal ensemble, under the detector's "
                              "noise process; label_quality then also mixes in that posterior's probability of the given "
                              "label; the detector's verdict and the consensus score alone instead when its held-out "
                              "test rejected that noise process, see verdict_z) or detector (the detector's verdict and "
                              "the consensus score alone); consensus-detect always reports the detector's",
                              choices=("final", "detector"))
    final_noise: str = option("auto", "issues_from=final: the noise process of the final verdict and ranking: full "
                              "(the confident joint's T, fine-tuning's own), symmetric (T's mean noise rate spread "
                              "evenly over the other classes; the prediction recalibrated to it) or auto (symmetric "
                              "unless the full T predicts the validation split's noisy labels better by at least "
                              "verdict_z paired standard errors of the log-likelihood; full without a split). "
                              "Fine-tuning's targets keep the full T either way",
                              choices=("auto", "full", "symmetric"))
    head_targets: str = option("posterior", "targets of the step-2 head on the cached features (fine-tuning's epoch 0): soft "
                               "(w·given + (1 − w)·sharpened prediction) or posterior (the sharpened label posterior, "
                               "fine-tuning's own targets under relabel=posterior)", choices=("soft", "posterior"))

    @property
    def component_list(self) -> list[str]:
        return _component_list("components", self.components)

    @property
    def score_component_list(self) -> list[str]:
        return _component_list("score_components", self.score_components)

    def check(self) -> None:
        self.component_list, self.score_component_list  # noqa: B018 (raise on a bad list)


class RefurbishedTargets(nn.Module):
    """Soft cross-entropy on t_i = w_i·onehot(ȳ_i) + (1 − w_i)·sharpen(p_i), as ``loss(logits, y, index)``.

    Also the state of the method: the detector's score and prediction, the clean weights and the
    temporal ensemble of the model's predictions (updated from every training batch's own logits, so
    collecting it costs no extra pass). A module, so a checkpoint keeps it all.
    """

    def __init__(self, labels: np.ndarray, det_score: np.ndarray, det_probs: np.ndarray, w: np.ndarray, s: ConsensusSettings,
                 flags: np.ndarray | None = None, q: float = 0.7, transition: np.ndarray | None = None,
                 verdict: np.ndarray | None = None, final_verdict: bool = False, val_probs: np.ndarray | None = None,
                 val_labels: np.ndarray | None = None, final_noise: cd.NoiseModel | None = None):
        super().__init__()
        n, c = det_probs.shape
        self.s, self.q = s, q
        self.elr = ELR(n, c, beta=s.elr_beta, lam=s.elr_lambda)
        self.register_buffer("flags", torch.as_tensor(np.zeros(n, bool) if flags is None else np.asarray(flags, bool)))
        self.register_buffer("labels", torch.as_tensor(np.asarray(labels, dtype=np.int64)))
        # relabel=posterior: the detector's is_label_issue (run_detector's verdict; without one, the detector's
        # posterior's), kept with the run's state so a resumed run reports it
        if verdict is None:
            verdict = posterior_verdict(det_probs, labels, transition) if transition is not None else np.zeros(n, bool)
        self.register_buffer("verdict", torch.as_tensor(np.asarray(verdict, bool)))
        # whether issues() reports the final posterior's verdict once fine-tuning has run (see issues())
        self.register_buffer("final_verdict", torch.tensor(bool(final_verdict)))
        # the final verdict's and ranking's noise process when not the targets' own T (final_noise; empty: T), and the
        # temperature that puts the detector's calibrated prediction on its scale
        self.register_buffer("final_T", torch.as_tensor(final_noise.transition if final_noise is not None else
                                                        np.zeros((0, c)), dtype=torch.float64))
        self.register_buffer("final_tau", torch.tensor(final_noise.tau if final_noise is not None else 1.0,
                                                       dtype=torch.float64))
        self.register_load_state_dict_pre_hook(_checkpoint_without_verdict)
        self.register_buffer("det_score", torch.as_tensor(det_score, dtype=torch.float64))
        self.register_buffer("det_probs", torch.as_tensor(det_probs, dtype=torch.float32))
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32))
        self.register_buffer("ensemble", torch.zeros(n, c))       # temporal ensemble (epochs before this one)
        self.register_buffer("current", torch.zeros(n, c))        # this epoch's predictions so far
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        # the model's share in the prediction (model_weight_from=val: refitted every epoch on the validation split's
        # noisy labels, from the detector's calibrated class distributions of it and the model's own)
        self.register_buffer("weight", torch.tensor(float(s.model_weight), dtype=torch.float64))
        self.weight_z: float | None = None  # how clearly the last fit beat model_weight (logged, not kept)
        fit = s.model_weight_from == "val" and val_probs is not None and val_labels is not None and len(val_labels) > 1
        self.register_buffer("val_det", torch.as_tensor(val_probs if fit else np.zeros((0, c)), dtype=torch.float32))
        self.register_buffer("val_labels", torch.as_tensor(np.asarray(val_labels if fit else [], dtype=np.int64)))

        # the current consensus score: its own memory (as_tensor of a float64 array would share det_score's,
        # and every end_epoch would overwrite the detector's score on the CPU)
        self.register_buffer("score", torch.tensor(det_score, dtype=torch.float64))
        # relabel=posterior (empty otherwise): the noise process T, estimated once from the detector's out-of-sample
        # prediction (the model's own ensemble has fitted the labels, so a T from it would say "no noise"), and the
        # label posterior, re-derived from the current prediction after every epoch
        posterior = s.relabel == "posterior"
        T = torch.as_tensor(transition, dtype=torch.float64) if transition is not None else torch.eye(c, dtype=torch.float64)
        self.register_buffer("transition", T if posterior else torch.zeros(0, c, dtype=torch.float64))
        self.register_buffer("post", torch.zeros((n, c) if posterior else (0, c)))
        if posterior and transition is not None:
            self._update_posterior()

    def _update_posterior(self) -> None:
        """post = Bayes' label posterior of the current prediction under T; flags = its arg-max ≠ the label."""
        self.post.copy_(torch.as_tensor(cd.label_posterior(self.prediction().cpu().numpy(), self.labels.cpu().numpy(),
                                                           self.transition.cpu().numpy())))
        self.flags.copy_(self.post.argmax(1) != self.labels)

    def prediction(self) -> torch.Tensor:
        """The predicted part of the targets (before sharpening): detector, mixed with the model's ensemble once it exists."""
        if int(self.epochs_seen) == 0:
            return self.det_probs
        a = float(self.weight)
        return (1 - a) * self.det_probs + a * self.ensemble

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        idx = index.to(self.w.device)
        with torch.no_grad():
            # data-parallel: every rank's rows of the global batch (one process: this batch), so each rank's ensemble
            # is the one process's
            every, probs = dist.global_rows(idx, logits.detach().float().softmax(1))
            self.current[every] = probs.to(self.current.device)
            t = self._targets(idx, logits.shape[1])
        t = t.to(logits.device)
        if self.s.base_loss == "gce":  # GCE on the target distribution: (1 − (Σ_c t_c p_c)^q) / q
            pt = (t * logits.float().softmax(1)).sum(1).clamp_min(1e-12)
            loss = ((1 - pt ** self.q) / self.q).mean()
        else:
            loss = -(t * F.log_softmax(logits.float(), 1)).sum(1).mean()
            if self.s.base_loss == "sce":  # + reverse CE, the prediction scored against the target
                loss = loss + reverse_ce(logits.float(), t).mean()
        if self.s.elr_lambda > 0:
            loss = loss + self.s.elr_lambda * self.elr.regulariser(logits.float(), idx.to(logits.device))
        return loss

    def _targets(self, idx: torch.Tensor, num_classes: int) -> torch.Tensor:
        """This batch's targets under the relabel rule (only the rule's own inputs are computed: a training hot path)."""
        if self.s.relabel == "posterior":
            return sharpen(self.post[idx], self.s.sharpen_T)
        onehot = F.one_hot(self.labels[idx], num_classes).float()
        if self.s.relabel == "none":
            return onehot
        pred = self.prediction()[idx]
        guess = sharpen(pred, self.s.sharpen_T)
        if self.s.relabel == "flagged":
            flag = self.flags[idx] & (pred.max(1).values >= self.s.relabel_min_conf)
            return torch.where(flag.unsqueeze(1), guess, onehot)
        w = self.w[idx].unsqueeze(1)  # soft
        return w * onehot + (1 - w) * guess

    @torch.no_grad()
    def end_epoch(self, num_classes: int, val_probs: np.ndarray | None = None) -> None:
        """Fold this epoch's predictions into the ensemble; refit the model's share in the prediction (when the
        targets hold the detector's validation prediction and ``val_probs``, the model's); re-estimate the consensus
        score and w."""
        m = self.s.ema if int(self.epochs_seen) > 0 else 0.0
        self.ensemble.mul_(m).add_((1 - m) * self.current)
        self.epochs_seen += 1
        if len(self.val_labels) and val_probs is not None:
            share, self.weight_z = cd.mixture_weight(self.val_det.cpu().numpy(), val_probs, self.val_labels.cpu().numpy(),
                                                     self.transition.cpu().numpy(), self.s.model_weight,
                                                     self.s.model_weight_z)
            self.weight.fill_(share)
        # data-parallel: rank 0 fits the GMM and cleanlab's flags on its (every rank's identical) ensemble and hands
        # them to every rank, so no rank's targets can drift from another's by a library's thread order
        score, w, flags = dist.on_main(lambda: self._estimate(num_classes))
        self.score.copy_(torch.as_tensor(score))
        self.w.copy_(torch.as_tensor(w, dtype=torch.float32))
        if flags is not None:
            self.flags.copy_(torch.as_tensor(flags))
        if self.s.relabel == "posterior":  # every rank derives it from its identical prediction and T
            self._update_posterior()

    def issues(self) -> np.ndarray:
        """is_label_issue under the relabel rule. posterior: after a fine-tuning epoch and with ``final_verdict``,
        the labels most probably wrong under the current targets' posterior
        (:func:`~noisyft.methods.consensus_detect.posterior_issues` of :meth:`final_posterior`: the detector's
        prediction mixed with the model's temporal ensemble, under the detector's T or the symmetric noise model
        that ``final_noise`` chose); else the detector's verdict. Other rules: cleanlab's find_label_issues on the
        current prediction.

        Why the final posterior: on the training truth of 54 committed bench cells (new_method_design.md §15) its
        F1 beat the detector's at 14 of 16 noisy settings and tied at 2 (mean 0.777 against 0.720; long-tailed
        sym-0.2 0.666 against 0.571), and on clean labels it flagged fewer (5.2 % / 8.2 % against 9.1 % / 10.6 %).
        The model trains on the posterior's targets, not on the given labels, so its ensemble has not simply fitted
        the wrong ones. Where the detector's held-out test rejected the prediction's noise process (80 % noise: T
        under-states it) the final posterior inherits that T, so the detector's verdict stays.
        """
        if self.s.relabel == "posterior":
            if self._final():
                return cd.posterior_issues(self.final_posterior(), self.labels.cpu().numpy())
            return self.verdict.cpu().numpy()
        return cd.issue_flags(self.prediction().cpu().numpy(), self.labels.cpu().numpy())

    def label_quality(self) -> np.ndarray:
        """label_quality (high = the given label looks right): the consensus score, combined (``combine``) with the
        final posterior's (:meth:`final_posterior`) probability of the given label whenever is_label_issue comes from
        that posterior.

        Why: on the same 54 cells (new_method_design.md §15) the mix ranked wrong labels better at 11 of 16 noisy
        settings, equal at 2 and worse at 3 by at most 0.007 (64 px sym-0.1); mean AUROC 0.919 against 0.911, +2.8
        at 64 px asym-0.4, +2.2 at 96 px asym-0.4, +1.5 at 64 px inst-0.4: the posterior ranks structured noise
        better, the score symmetric noise.
        """
        score = self.score.cpu().numpy()
        if not self._final():
            return score
        given = self.final_posterior()[np.arange(len(self.labels)), self.labels.cpu().numpy()].astype(np.float64)
        return cd.ensemble_score([score, given], self.s.combine)

    def final_posterior(self) -> np.ndarray:
        """The current targets' label posterior (N, C) under the final verdict's noise process: the targets' own
        (``post``), or under ``final_T`` (final_noise: symmetric) of the same prediction recalibrated to it."""
        if not len(self.final_T):
            return self.post.cpu().numpy()
        a = float(self.weight)
        pred = (1 - a) * cd.temper(self.det_probs.cpu().numpy(), float(self.final_tau)) + a * self.ensemble.double().cpu().numpy()
        return cd.label_posterior(pred, self.labels.cpu().numpy(), self.final_T.cpu().numpy())

    def _final(self) -> bool:
        """Whether the report takes the final posterior's verdict and ranking (relabel=posterior, ``final_verdict``,
        and at least one fine-tuning epoch run)."""
        return self.s.relabel == "posterior" and bool(self.final_verdict) and int(self.epochs_seen) > 0

    def _estimate(self, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(consensus score, clean weight w, cleanlab's flags or None) from the detector and the ensemble."""
        labels = self.labels.cpu().numpy()
        model_score = self.ensemble[torch.arange(len(labels)), self.labels].double().cpu().numpy()
        a = self.s.model_weight
        det = self.det_score.cpu().numpy()
        score = (1 - a) * cd.rank01(det) + a * cd.rank01(model_score) if self.s.combine == "rank" \
            else (1 - a) * det + a * model_score
        w = cd.clean_posterior(score, labels, num_classes)
        flags = cd.issue_flags(self.prediction().cpu().numpy(), labels) if self.s.relabel == "flagged" else None
        return score, w, flags


def reestimate(ctx: Context, targets: RefurbishedTargets, s: ConsensusSettings) -> dict:
    """End of a fine-tuning epoch, once the model has predicted the validation split: fold the epoch into the
    targets (:meth:`RefurbishedTargets.end_epoch`, with the model's validation prediction) and return what to log."""
    with ctx.run.phase("selection"):
        targets.end_epoch(ctx.num_classes, ctx.val_probs)
    stats = {"mean_w": float(targets.w.mean()), "n_relabelled": int(targets.flags.sum()),
             "model_weight": float(targets.weight)}
    if targets.weight_z is not None:
        stats["model_weight_z"] = targets.weight_z
    if ctx.train.true_labels is not None:
        m = selection_metrics(targets.w.cpu().numpy() > s.issue_threshold, ctx.train.labels, ctx.train.true_labels)
        stats.update(clean_precision=m["precision"], clean_recall=m["recall"], clean_f1=m["f1"])
        if len(targets.post):  # how many targets' arg-max is the true class (a diagnostic no rule reads)
            stats["target_true_acc"] = hit_rate(targets.post.argmax(1).cpu().numpy(), ctx.train.true_labels)
    return stats


def final_verdict(s: ConsensusSettings, det: Detection) -> bool:
    """Whether consensus reports the final posterior's verdict (``issues_from=final``): not where the detector's
    held-out test rejected the prediction's noise process, which the final posterior is computed under."""
    return s.issues_from == "final" and det.noise_model == "prediction"


def final_noise_model(det: Detection, labels: np.ndarray, val_labels: np.ndarray | None,
                      s: ConsensusSettings) -> tuple[cd.NoiseModel | None, dict]:
    """(the final verdict's and ranking's noise process when it is not the targets' own T, else None; what to log),
    under ``final_noise``: auto takes the symmetric one (:func:`~noisyft.methods.consensus_detect.symmetric_noise_model`)
    unless the full T predicts the validation split's noisy labels better by at least ``verdict_z`` paired standard
    errors.

    Why: on 16 committed-grid cells (new_method_design.md §21) the symmetric noise process ranked and flagged symmetric
    noise far better (Fashion-MNIST sym-0.1 F1 0.734 → 0.828, long-tailed sym-0.2 0.664 → 0.711) and structured noise
    far worse (64 px asym-0.4 0.568 → 0.343); the held-out labels rejected it at every structured cell and kept it at
    the symmetric ones where they could not tell the two apart. Simpler model unless the evidence is clear.
    """
    if not final_verdict(s, det) or det.noise is None or s.final_noise == "full":
        return None, {}
    calibrated, T = det.noise
    sym = cd.symmetric_noise_model(calibrated, labels, T)
    if s.final_noise == "symmetric":
        return sym, {"final_noise": "symmetric"}
    if det.val_probs is None or val_labels is None or len(val_labels) < 2:
        return None, {"final_noise": "full"}
    z = cd.symmetric_z(det.val_probs, val_labels, T, sym)
    chosen = z > -s.verdict_z
    return (sym if chosen else None), {"final_noise": "symmetric" if chosen else "full", "final_noise_z": z}


def posterior_verdict(det_probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """The detector's posterior's is_label_issue (the prediction's noise model, no held-out choice)."""
    labels = np.asarray(labels, dtype=np.int64)
    return cd.posterior_issues(cd.label_posterior(np.asarray(det_probs), labels, np.asarray(transition)), labels)


def _checkpoint_without_verdict(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """A checkpoint written before the verdict was kept: its own detector posterior's verdict, as it reported then
    (and one written before ``final_verdict``: the detector's verdict, as it reported then)."""
    state_dict.setdefault(prefix + "final_verdict", torch.tensor(False))
    # written before final_noise: the targets' own T, as it reported then
    state_dict.setdefault(prefix + "final_T", torch.zeros(0, module.final_T.shape[1], dtype=torch.float64))
    state_dict.setdefault(prefix + "final_tau", torch.tensor(1.0, dtype=torch.float64))
    module.final_T = torch.empty_like(state_dict[prefix + "final_T"])  # sized by the run's detector, as val_det
    for name in ("weight", "val_det", "val_labels"):  # written before model_weight_from: the fixed share
        state_dict.setdefault(prefix + name, getattr(module, name))
    for name in ("val_det", "val_labels"):  # sized by the run's detector, which a resumed run does not rerun
        setattr(module, name, torch.empty_like(state_dict[prefix + name]))
    if prefix + "verdict" in state_dict:
        return
    labels, T = state_dict[prefix + "labels"].cpu().numpy(), state_dict[prefix + "transition"].cpu().numpy()
    verdict = posterior_verdict(state_dict[prefix + "det_probs"].cpu().numpy(), labels, T) if len(T) else \
        np.zeros(len(labels), bool)
    state_dict[prefix + "verdict"] = torch.as_tensor(verdict)


class _SoftTargets(nn.Module):
    """Soft cross-entropy on fixed per-sample targets, as ``loss(logits, y, index)`` (for the head)."""

    def __init__(self, targets: torch.Tensor):
        super().__init__()
        self.register_buffer("targets", targets)

    def forward(self, logits, y, index):
        return -(self.targets[index] * F.log_softmax(logits, 1)).sum(1).mean()


def refurbished_targets(labels: np.ndarray, w: np.ndarray, probs: np.ndarray, num_classes: int, T: float = 0.5) -> torch.Tensor:
    """t_i = w_i·onehot(ȳ_i) + (1 − w_i)·sharpen(p_i, T), float32 (N, C)."""
    onehot = F.one_hot(torch.as_tensor(np.asarray(labels, dtype=np.int64)), num_classes).float()
    wt = torch.as_tensor(np.asarray(w), dtype=torch.float32).unsqueeze(1)
    return wt * onehot + (1 - wt) * sharpen(torch.as_tensor(probs, dtype=torch.float32), T)


def start_targets(labels: np.ndarray, w: np.ndarray, probs: np.ndarray, s: ConsensusSettings,
                  noise: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """The step-2 head's targets (N, C) under ``s.head_targets``: the refurbished labels (soft) or the sharpened label
    posterior of the prediction calibrated to the noise process estimated from it (posterior; ``noise``: that
    :func:`~noisyft.methods.consensus_detect.noise_model` already computed)."""
    if s.head_targets == "posterior":
        calibrated, T = noise if noise is not None else cd.noise_model(probs, labels)
        return sharpen(torch.as_tensor(cd.label_posterior(calibrated, labels, T)), s.sharpen_T)
    return refurbished_targets(labels, w, probs, probs.shape[1], s.sharpen_T)


def refurbish_head(feats: torch.Tensor, labels: np.ndarray, targets: torch.Tensor, *, epochs: int, optim: OptimConfig,
                   batch_size: int, seed: int, init: nn.Linear | None = None) -> nn.Linear:
    """A linear head trained on the cached features toward soft ``targets`` (N, C) (from ``init`` when given)."""
    torch.manual_seed(generator(seed, 70).initial_seed())
    head = copy.deepcopy(init) if init is not None else nn.Linear(feats.shape[1], targets.shape[1])
    head = head.to(feats.device)
    loss = _SoftTargets(targets.float().to(feats.device))
    opt = optim.build(head.parameters())
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(feats.device)
    for epoch in range(1, epochs + 1):
        train_head_epoch(head, feats, y, loss, opt, batch_size=batch_size, gen=generator(seed, 71, epoch), epoch=epoch)
    return head


class _Delivery:
    """The checkpoints fine-tuning may deliver: the best on noisy validation so far (weights on the CPU) and the last,
    with the validation samples each predicted right; checkpointable like a module."""

    def __init__(self):
        self.val_acc, self.where, self.weights, self.hits = -1.0, "", None, None
        self.last, self.last_hits = "", None

    def offer(self, val_acc: float | None, where: str, model: nn.Module, hits: np.ndarray | None = None) -> None:
        self.last, self.last_hits = where, hits
        if val_acc is None or val_acc > self.val_acc:
            self.val_acc, self.where, self.hits = (-1.0 if val_acc is None else val_acc), where, hits
            self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def best_z(self) -> float | None:
        """How clearly the best checkpoint beats the last on validation (paired standard errors; None: not known)."""
        if self.where == self.last:
            return 0.0
        if self.hits is None or self.last_hits is None:
            return None
        return cd.paired_z(self.hits.astype(np.float64) - self.last_hits)

    def state_dict(self) -> dict:
        tensor = lambda hits: None if hits is None else torch.from_numpy(np.asarray(hits, dtype=bool))  # weights-only
        return {"val_acc": self.val_acc, "where": self.where, "weights": self.weights, "hits": tensor(self.hits),
                "last": self.last, "last_hits": tensor(self.last_hits)}

    def load_state_dict(self, d: dict) -> None:
        array = lambda hits: None if hits is None else hits.numpy()
        self.val_acc, self.where, self.weights = float(d["val_acc"]), str(d["where"]), d["weights"]
        # a checkpoint from before the paired rule: its best is delivered, as it was then
        self.hits, self.last = array(d.get("hits")), str(d.get("last", self.where))
        self.last_hits = array(d.get("last_hits"))


def delivered_checkpoint(delivery: _Delivery, z_min: float) -> tuple[str, float | None]:
    """Which epoch fine-tuning delivers, and the best's z: the best noisy-validation checkpoint when it beats the
    last epoch by at least ``z_min`` paired standard errors (or that cannot be measured), else the last.

    Why: a small noisy validation split cannot tell epochs apart (64 px sym-0.9: 200 images, 81 % wrong, the six
    candidates within a dozen images of each other), and its arg-max then picks an epoch by chance; fine-tuning on
    the label posterior with ELR keeps improving on average (mean noisy-validation accuracy is highest or tied at
    the last epoch at 6 of 8 settings), so the last is the default and the split must show an earlier one is
    better (new_method_design.md §13).
    """
    z = delivery.best_z()
    return (delivery.where if z is None or z >= z_min else delivery.last), z


def cotrain_epochs(s: ConsensusSettings, epochs_lp: int, noise_estimate: float | None, n_train: int) -> int:
    """The co-trained heads' epochs: ``cotrain_epochs`` when set; else half of ``epochs_lp`` (rounded up) when the
    out-of-fold probes' ``noise_estimate`` (cleanlab's confident-joint rate on their out-of-sample probabilities,
    :func:`~noisyft.run.noise_rate.confident_joint_rates`; None without probes) is below
    ``short_cotrain_below`` and there are at least ``short_cotrain_min_samples`` training samples, else ``epochs_lp``.

    Why: the longer the two heads train, the more wrong labels they fit. On the 96 px grid's training truth
    (new_method_design.md §8–9) 10 epochs instead of 20 made fine-tuning's targets 1.8–4.0 points more accurate
    at ≤ 21 % realised noise (probes' estimate 0.30–0.42) and 0.8 / 3.7 points less accurate at sym-0.6 / sym-0.9
    (estimate ≥ 0.56), where the heads need the epochs to find the few clean samples; it also cuts MixMatch steps.
    Probes weaker than these overestimate the noise, which falls back to the full epochs. On small sets (900
    training images; the tests' ~100) the halved heads ranked wrong labels worse: too few MixMatch steps.
    """
    if s.cotrain_epochs is not None:
        return s.cotrain_epochs
    if noise_estimate is None or noise_estimate >= s.short_cotrain_below or n_train < s.short_cotrain_min_samples:
        return epochs_lp
    return max(1, (epochs_lp + 1) // 2)


def prediction_components(s: ConsensusSettings, noise_estimate: float | None, n_train: int) -> list[str]:
    """The components whose class distributions make the prediction p: ``components``, less the out-of-fold probes
    (``oof``) when their own noise estimate is at least ``probes_predict_below`` (off by default), there are at least
    ``probes_predict_min_samples`` training samples and another component remains.

    Why it exists and is off: at high noise the GCE probes, trained on mostly wrong labels, predict worse than
    UNICON-LP's heads; without them fine-tuning's targets were 1.3–4.2 points more accurate against the training
    truth at inst-0.4 / sym-0.6 / sym-0.9 (4,500 images, 3 seeds) and the issue F1 9 points higher at inst-0.4, but
    the fine-tuned model's noisy-validation accuracy was 0.3 points lower on average and its test accuracy no better
    (new_method_design.md §10). On 450–900 images the heads alone understated the noise process and lost 7–17 points
    of issue F1, hence the size minimum.
    """
    comps = s.component_list
    keep = (noise_estimate is None or noise_estimate < s.probes_predict_below or s.probes_predict_below >= 1
            or n_train < s.probes_predict_min_samples or comps == ["oof"])
    return comps if keep else [c for c in comps if c != "oof"]


class Detection(NamedTuple):
    """What the detector hands to fine-tuning and to the verdict."""

    score: np.ndarray           # the consensus score (the ranking; high = label looks right)
    w: np.ndarray               # per-class GMM clean weight on it
    probs: np.ndarray           # the prediction p (N, C)
    head: nn.Linear | None      # UNICON-LP's averaged head (None without cotrain)
    noise: tuple[np.ndarray, np.ndarray] | None  # p's noise model (calibrated p, T) when a posterior rule needs it
    issues: np.ndarray          # is_label_issue (:func:`detector_verdict`)
    noise_model: str = "prediction"  # whose noise model the verdict used (another: the held-out test rejected p's)
    val_probs: np.ndarray | None = None  # p of the validation split, calibrated as ``noise``'s (None: no split or no T)


def head_batch(ctx: Context, s: ConsensusSettings) -> int:
    """The batch size of the linear heads trained on cached features: ``head_batch_size``, else the run's."""
    return s.head_batch_size or ctx.cfg.batch_size


def run_detector(ctx: Context, s: ConsensusSettings) -> Detection:
    """The detector on the cached features and its verdict, timed as ``selection``/``lp``."""
    cfg, labels, batch = ctx.cfg, ctx.train.labels, head_batch(ctx, s)
    feats = ctx.feature_tensor("train")
    used = list(dict.fromkeys([*s.component_list, *s.score_component_list]))
    held_out = s.relabel == "posterior" and ctx.val is not None and len(ctx.val) > 1
    head, stats = None, {}
    with ctx.run.phase("selection"):  # out-of-fold probes, kNN agreement
        det = cd.detect(feats, labels, ctx.num_classes, components=used, folds=s.folds, epochs=cfg.epochs_lp,
                        optim=ctx.lp_optim, batch_size=batch, seed=cfg.seed, k=s.knn_k,
                        knn_temperature=s.knn_temperature, oof_loss=s.oof_loss,
                        val_feats=ctx.feature_tensor("val") if held_out else None)
    estimate = confident_joint_rates(labels, det.probs["oof"])[0] if "oof" in det.probs else None
    stats["noise_estimate_oof"] = estimate
    if "cotrain" in used:  # UNICON-LP logs its own lp epochs and times them
        stats["cotrain_epochs"] = cotrain_epochs(s, cfg.epochs_lp, estimate, len(labels))
        score, probs, head = cd.cotrain_scores(ctx, stats["cotrain_epochs"], batch)
        det.scores["cotrain"], det.probs["cotrain"] = score, probs
        if held_out:
            det.val_probs["cotrain"] = head_logits(head, ctx.features("val"), ctx.device).float().softmax(1).double().numpy()
    with ctx.run.phase("selection"):
        score = cd.ensemble_score([det.scores[c] for c in s.score_component_list], s.combine)
        w = cd.clean_posterior(score, labels, ctx.num_classes)
        predictors = prediction_components(s, estimate, len(labels))
        probs = np.mean([det.probs[c] for c in predictors], axis=0)
        rates = noise_rates(det, probs, labels, s)
        if rates is not None:
            stats["noise_estimate_mpe"] = float(np.bincount(labels, minlength=ctx.num_classes) @ rates / len(labels))
        fitted = noise_model_for(probs, labels, s, rates)
        noise = None if fitted is None else (fitted.calibrated(probs), fitted.transition)
        issues, verdict = detector_verdict(det, predictors, probs, fitted, labels, ctx.val.labels if held_out else None, s,
                                           rates)
        val_pred = val_prediction(det, predictors)
        val_probs = fitted.calibrated(val_pred) if held_out and fitted is not None and val_pred is not None else None
        stats.update(components=predictors, score_components=s.score_component_list, **verdict)
        if ctx.train.true_labels is not None:
            from sklearn.metrics import roc_auc_score

            wrong = ctx.train.true_labels != labels
            if 0 < wrong.sum() < len(wrong):
                stats.update({f"auroc_{c}": float(roc_auc_score(wrong, -det.scores[c])) for c in used})
                stats["auroc_consensus"] = float(roc_auc_score(wrong, -score))
        ctx.log_selection(0, np.flatnonzero(w > s.issue_threshold), **stats)
    return Detection(score, w, probs, head, noise, issues, verdict.get("verdict_noise_model", "prediction"), val_probs)


def val_prediction(det: cd.DetectorScores, predictors: list[str]) -> np.ndarray | None:
    """The prediction p of the validation split (the predictors' mean class distribution), or None where one of
    them did not predict it."""
    if not set(predictors) <= set(det.val_probs):
        return None
    return np.mean([det.val_probs[c] for c in predictors], axis=0)


def detector_verdict(det: cd.DetectorScores, predictors: list[str], probs: np.ndarray, fitted: cd.NoiseModel | None,
                     labels: np.ndarray, val_labels: np.ndarray | None, s: ConsensusSettings,
                     rates: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(is_label_issue, what to log): the label posterior's most probably wrong labels (relabel=posterior), under the
    prediction's noise model ``fitted`` — or, with held-out ``val_labels``, under the out-of-fold probes' or the
    co-trained heads' own when :func:`~noisyft.methods.consensus_detect.choose_noise_model` finds it predicts them
    clearly better; cleanlab's find_label_issues on the prediction under the other relabel rules. ``rates``: the
    given classes' noise rates every candidate noise model takes (:func:`noise_rates`; None: each joint's own).

    Why: on the training truth of 64/96 px CIFAR-10 and Fashion-MNIST (new_method_design.md §12) the prediction's
    posterior gave the best verdicts except at 80 % noise, where the heads have fitted part of the labels and the
    posterior flags ~60 %; the out-of-fold probes' then flag ~80 %, and held-out labels tell the two cases apart.
    """
    if s.relabel != "posterior":
        return cd.issue_flags(probs, labels), {}
    train, models, stats, chosen = {"prediction": probs}, {"prediction": fitted}, {}, "prediction"
    val_pred = val_prediction(det, predictors)
    if val_labels is not None and val_pred is not None:
        val = {"prediction": val_pred}
        for c in ("oof", "cotrain"):
            if c in det.val_probs:
                train[c], val[c] = det.probs[c], det.val_probs[c]
                models[c] = cd.fit_noise_model(det.probs[c], labels, rates)
        chosen, z = cd.choose_noise_model(models, val, val_labels, "prediction", s.verdict_z)
        stats = {"verdict_noise_model": chosen, **{f"verdict_z_{name}": v for name, v in z.items()}}
    m = models[chosen]
    return cd.bayes_issues(train[chosen], labels, (m.calibrated(train[chosen]), m.transition))[1], stats


def noise_rates(det: cd.DetectorScores, probs: np.ndarray, labels: np.ndarray, s: ConsensusSettings) -> np.ndarray | None:
    """Each given class's share of wrong labels for every noise model (``noise_rates=mpe``: the mixture-proportion
    estimate on the out-of-fold probes, else on ``probs``), or None to keep each confident joint's own."""
    if s.noise_rates != "mpe":
        return None
    return cd.mpe_noise_rates(det.probs.get("oof", probs), labels)


def noise_model_for(probs: np.ndarray, labels: np.ndarray, s: ConsensusSettings,
                    rates: np.ndarray | None = None) -> cd.NoiseModel | None:
    """The detector's noise model (T, τ) when a posterior rule needs it, else None: estimated once per run
    (deterministic numpy: every rank computes the same from the same detector)."""
    return cd.fit_noise_model(probs, labels, rates) if "posterior" in (s.relabel, s.head_targets) else None


CONSENSUS_LABEL_QUALITY = ("label_quality: the consensus score, the UNICON-LP heads' 1 − JSD between their prediction "
                           "and the given label (consensus: mixed with the fine-tuned model's temporal-ensemble probability "
                           "of the given label, then averaged with the final label posterior's probability of the given "
                           "label where is_label_issue comes from that posterior); is_label_issue: the labels most "
                           "probably wrong under the label posterior (a class distribution times the noise process "
                           "estimated from cleanlab's confident joint on the "
                           "detector's out-of-sample prediction; with noise_rates=mpe each given class's share of wrong "
                           "labels from a mixture-proportion estimate on the out-of-fold probes instead), "
                           "as many as maximise the F1 the posterior itself expects. "
                           "consensus (issues_from=final): the posterior of its last fine-tuning targets, the detector's "
                           "prediction mixed with the model's temporal ensemble, under a symmetric noise process at the "
                           "estimated rate unless the validation split's noisy labels reject it (final_noise); consensus-detect, and consensus where the "
                           "detector's held-out test rejects that noise process: the detector's own posterior, with a "
                           "validation split the out-of-fold probes' or the heads' instead when its noise model predicts "
                           "the split's noisy labels clearly better (verdict_z); with relabel=flagged/soft/none: "
                           "cleanlab's find_label_issues)")


@METHODS.register("consensus-detect", settings=ConsensusSettings)
@label_quality_doc(CONSENSUS_LABEL_QUALITY)
def consensus_detect(ctx: Context) -> MethodOutput:
    """Cached-feature detector: UNICON-LP heads rank (1 − JSD), GCE out-of-fold probes + heads predict; a refurbished-label head."""
    s, labels = ctx.settings, ctx.train.labels
    det = run_detector(ctx, s)
    with ctx.run.phase("lp"):
        head = refurbish_head(ctx.feature_tensor("train"), labels, start_targets(labels, det.w, det.probs, s, det.noise),
                              epochs=ctx.cfg.epochs_lp, optim=ctx.lp_optim, batch_size=head_batch(ctx, s), seed=ctx.cfg.seed,
                              init=det.head)
    ctx.log_epoch("lp", ctx.cfg.epochs_lp + 1, head=head, stage="refurbished head")
    logits = head_logits(head, ctx.features("train"), ctx.device)
    return MethodOutput(model=ctx.classifier(head), train_logits=logits, clean_prob=det.score, is_issue=det.issues,
                        pred_probs=det.probs)


@METHODS.register("consensus", settings=ConsensusSettings)
@label_quality_doc(CONSENSUS_LABEL_QUALITY)
def consensus(ctx: Context) -> MethodOutput:
    """Cached-feature detector, then fine-tuning on ALL samples toward Bayes label posteriors (labels kept at low noise).

    Each target is P(class | x, given) ∝ detector prediction × the noise process estimated from cleanlab's confident joint.
    """
    cfg, s = ctx.cfg, ctx.settings
    labels, C = ctx.train.labels, ctx.num_classes
    model, opt = ctx.fresh_model()  # seeded: the fresh head (the default start) is the -fft baselines' own
    n = len(ctx.train)
    targets = RefurbishedTargets(labels, np.zeros(n), np.full((n, C), 1.0 / C), np.ones(n), s).to(ctx.device)
    best = _Delivery()
    states = {"model": model, "opt": opt, "targets": targets, "best": best}
    start = ctx.resume(TAG, **states)
    if start == 0:
        det = run_detector(ctx, s)
        score, w, probs, noise = det.score, det.w, det.probs, det.noise
        with ctx.run.phase("lp"):
            head = refurbish_head(ctx.feature_tensor("train"), labels, start_targets(labels, w, probs, s, noise),
                                  epochs=cfg.epochs_lp, optim=ctx.lp_optim, batch_size=head_batch(ctx, s), seed=cfg.seed,
                                  init=det.head)
        # fine-tuning's epoch 0: the pretrained backbone with the refurbished head (a candidate for delivery)
        rec = ctx.log_epoch("fft", 0, head=head, stage="start: pretrained backbone + refurbished head")
        fresh = copy.deepcopy(model.head.state_dict()) if s.head_init == "fresh" else None
        model.head.load_state_dict(head.state_dict())
        best.offer(rec.get("val_acc"), "fft:0", model, ctx.val_predictions == ctx.val.labels if ctx.val is not None else None)
        if fresh is not None:
            model.head.load_state_dict(fresh)
        opt = ctx.fft_optim.build(model.parameters())
        states["opt"] = opt
        transition = None
        if s.relabel == "posterior":
            probs, transition = noise
        flags = cd.issue_flags(probs, labels) if s.relabel == "flagged" else None
        val_labels = ctx.val.labels if ctx.val is not None else None
        final_noise, stats = final_noise_model(det, labels, val_labels, s)
        if stats:
            ctx.run.log("selection", {"epoch": 0, **stats})
        targets = RefurbishedTargets(labels, score, probs, w, s, flags=flags, q=cfg.gce_q, transition=transition,
                                     verdict=det.issues, final_verdict=final_verdict(s, det), val_probs=det.val_probs,
                                     val_labels=val_labels, final_noise=final_noise).to(ctx.device)
        states["targets"] = targets
    everyone = np.arange(n)
    epochs = ctx.epochs_fft
    for epoch in range(start + 1, epochs + 1):
        with ctx.run.phase("fft"):
            loss = train_image_epoch(model, ctx.train, everyone, ctx.train_tf(), targets, opt, device=ctx.device,
                                     gen=generator(cfg.seed, 4, epoch), epoch=epoch, batch_size=cfg.batch_size,
                                     num_workers=cfg.num_workers, desc=f"{TAG} {epoch}/{epochs}",
                                     progress=cfg.progress, freeze_bn_stats=cfg.freeze_bn_stats, precision=cfg.precision)
        rec = ctx.log_epoch("fft", epoch, model=model, train_loss=loss, n_train=n,
                            after_eval=lambda: reestimate(ctx, targets, s))
        if not s.select_best or ctx.val is None:
            best.offer(None, f"fft:{epoch}", model)
        else:
            best.offer(rec.get("val_acc"), f"fft:{epoch}", model, ctx.val_predictions == ctx.val.labels)
        ctx.checkpoint(TAG, epoch, **states)
    where, z = delivered_checkpoint(best, s.select_z)
    if best.weights is not None and where == best.where and (s.select_best or epochs == 0):
        model.load_state_dict(best.weights)
    ctx.run.log("selection", {"epoch": epochs, "delivered_epoch": where, "delivered_z": z,
                              "best_val_epoch": best.where})
    score = targets.score.cpu().numpy()
    ctx.run.save_array("consensus/detector_score.npy", targets.det_score.cpu().numpy())
    ctx.run.save_array("consensus/final_score.npy", score)  # the consensus score alone (label_quality may mix more in)
    ctx.run.save_array("consensus/ensemble.npy", targets.ensemble.cpu().numpy())
    with ctx.run.phase("selection"):
        logits = ctx.image_logits(model, "train", desc="losses:train") if where != "fft:0" else \
            head_logits(model.head, ctx.features("train"), ctx.device)
    prediction = targets.prediction().cpu().numpy()
    return MethodOutput(model=model, train_logits=logits, clean_prob=targets.label_quality(), is_issue=targets.issues(),
                        info={"delivered_epoch": where}, pred_probs=prediction)
