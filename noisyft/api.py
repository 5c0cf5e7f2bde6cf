"""The Python API: ``fit``, ``detect``, ``predict``, ``report`` and ``demo`` (the CLI calls these).

>>> from noisyft import api
>>> result = api.fit(data="photos/", labels="noisy.csv", method="turn")
>>> result.label_issues.head()          # most suspect labels first
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from noisyft.backbones import Classifier, create_backbone
from noisyft.config import FitConfig, parse_optim
from noisyft.csvsafe import read_csv
from noisyft.data import LabeledSet, load_data, stratified_holdout
from noisyft.data.base import DataSplits
from noisyft.data.noise import apply_noise, parse_noise
from noisyft.data.transforms import eval_transform
from noisyft.engine import image_logits, resolve_device
from noisyft.errors import UserError
from noisyft.losses import per_sample_ce
from noisyft.methods import METHODS, Context, MethodOutput, validate_config
from noisyft.report.label_issues import detection_metrics, label_issues_frame
from noisyft.report.losses import save_losses
from noisyft.run import RunDir, load_weights
from noisyft.selection import fit_per_class_gmm

log = logging.getLogger("noisyft")


@dataclass
class FitResult:
    """What a fit leaves: the run directory, headline numbers, the label-issue table and the model."""

    run_dir: Path
    summary: dict
    label_issues: pd.DataFrame
    model: Optional[torch.nn.Module] = None


def prepare_data(cfg: FitConfig) -> tuple[DataSplits, Optional[LabeledSet], dict]:
    """Load the data, inject noise if asked, carve the noisy validation split."""
    splits = load_data(cfg.data, labels_csv=cfg.labels, test=cfg.test, test_fraction=cfg.test_fraction, seed=cfg.seed,
                       folder_labels_are_true=cfg.folder_labels_are_true, skip_bad_images=cfg.skip_bad_images,
                       max_train=cfg.max_train, max_test=cfg.max_test)
    noise_info: dict = {}
    if cfg.noise:
        if cfg.labels:
            raise UserError("--noise and --labels both given: the CSV already holds the given labels; drop one")
        splits.train, noise_info = apply_noise(parse_noise(cfg.noise), splits.train, cfg.seed)
    val = None
    if cfg.val_fraction > 0:
        keep, held = stratified_holdout(splits.train.labels, cfg.val_fraction, cfg.seed + 1)
        val, splits.train = splits.train.subset(held), splits.train.subset(keep)
    return splits, val, noise_info


def _labels_frame(data: LabeledSet) -> pd.DataFrame:
    df = pd.DataFrame({"index": np.arange(len(data)), "id": data.ids, "given_label": data.labels,
                       "given_class": np.asarray(data.classes, dtype=object)[data.labels]})
    if data.true_labels is not None:
        df["true_label"] = data.true_labels
    return df


def _summary(cfg: FitConfig, run: RunDir, issues: pd.DataFrame, splits: DataSplits, noise_info: dict) -> dict:
    """``summary.json``: the run, its accuracies phase by phase (:mod:`noisyft.headline`), selection, detection.

    ``test_acc`` is the accuracy of what the method delivers (validation-selected epoch of the delivered
    phase with ``--val-fraction``, else its last epoch); the linear probe's numbers are in ``probe`` and
    never stand for a fine-tuning method's accuracy.
    """
    from noisyft.headline import accuracy_summary  # imported here: keeps this change local to _summary

    summary = {"method": cfg.method, "backbone": cfg.backbone, "data": cfg.data, "noise": cfg.noise,
               "realised_noise": noise_info.get("realised_rate"), "n_train": len(splits.train),
               "n_test": 0 if splits.test is None else len(splits.test), "seed": cfg.seed,
               "timings": {**run.timings, "total": sum(run.timings.values())}}
    summary.update(accuracy_summary(run.records("metrics")))
    selection = run.records("selection")
    if selection:
        summary["selection"] = selection
    summary["detection"] = detection_metrics(issues)
    return summary


def finish(ctx: Context, out: MethodOutput, splits: DataSplits, noise_info: dict) -> FitResult:
    """Write the label-issue table, the model and the summary of a finished method."""
    cfg, run, train = ctx.cfg, ctx.run, ctx.train
    losses = per_sample_ce(out.train_logits, torch.as_tensor(train.labels)).numpy()
    gmm = fit_per_class_gmm(losses, train.labels, train.num_classes)
    clean_prob = gmm.clean_prob if out.clean_prob is None else out.clean_prob
    save_losses(run, "final", losses, gmm, cfg.tau, used_for_label_issues=out.clean_prob is None)
    issues = label_issues_frame(train.ids, train.labels, out.train_logits, clean_prob, train.classes, tau=cfg.tau,
                                true_labels=train.true_labels, is_issue=out.is_issue)
    run.write_frame("label_issues.csv", issues)
    meta = {"backbone": cfg.backbone, "image_size": ctx.backbone.preprocess.size, "classes": train.classes,
            "allow_remote_code": cfg.allow_remote_code,
            "preprocess": ctx.backbone.preprocess.to_dict()}
    run.save_model(out.model, meta)
    summary = _summary(cfg, run, issues, splits, noise_info)
    run.write_json("summary.json", summary)
    run.close()
    run.finish("done")
    run.drop_checkpoint()
    return FitResult(run.path, summary, issues, out.model)


def fit(config: Optional[FitConfig] = None, **overrides) -> FitResult:
    """Train ``config.method`` on the data and write a run directory; see FitConfig for every option.

    Running the same configuration again returns the finished run instead of
    recomputing it (features are cached across runs and methods regardless).
    """
    cfg = validate_config(dataclasses.replace(config or FitConfig(), **overrides))  # every option, before any work
    method = METHODS.get(cfg.method)
    run = RunDir(cfg.run_dir(), cfg.identity(), dataclasses.asdict(cfg))  # refuses a foreign folder; locks the run
    try:
        return _fit_in(run, cfg, method)
    finally:
        run.release()


def _fit_in(run: RunDir, cfg: FitConfig, method) -> FitResult:
    """``fit`` inside its locked run directory."""
    if "done" in run.state["finished"] and run.file("label_issues.csv").exists():
        log.info("run %s already finished; returning its results", run.path)
        return FitResult(run.path, run.read_json("summary.json"), read_csv(run.file("label_issues.csv")))
    splits, val, noise_info = prepare_data(cfg)
    checkpoint = run.load_checkpoint()
    if checkpoint:
        log.warning("resuming %s from %s epoch %d", run.path, checkpoint["tag"], checkpoint["epoch"])
    run.start(checkpoint)
    run.write_frame("labels.csv", _labels_frame(splits.train))
    run.write_json("noise.json", noise_info)
    run.write_json("data.json", splits.info)
    torch.manual_seed(cfg.seed)
    remote = {"allow_remote_code": True} if cfg.allow_remote_code else {}
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, image_size=cfg.image_size, **remote)
    lp_default, fft_default = backbone.hparams
    ctx = Context(cfg, splits.train, splits.test, val, backbone, run, resolve_device(cfg.device),
                  parse_optim(cfg.lp_optim, lp_default, "lp-optim"), parse_optim(cfg.fft_optim, fft_default, "fft-optim"),
                  resume_state=checkpoint)
    run.write_json("optim.json", {"lp": dataclasses.asdict(ctx.lp_optim), "fft": dataclasses.asdict(ctx.fft_optim)})
    return finish(ctx, method(ctx), splits, noise_info)


def resume(run_dir: str | Path, *, allow_remote_code: bool = False, **settings) -> FitResult:
    """Continue (or return, if finished) the run in ``run_dir`` with the configuration it was started with.

    The run folder's config is data, never a permission: a run started with remote model
    code allowed resumes only with ``allow_remote_code=True`` given here (``--allow-remote-code``
    on the command line). Settings that do not change results (``device``, ``num_workers``,
    ``cache_dir``, ``progress``, ``image_cache_mb``) come from this call, not from the folder,
    so a shared run cannot choose where noisyft writes its feature cache.
    """
    from noisyft.config import NON_RESULT_FIELDS
    from noisyft.run import is_run_dir, read_run_json

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists() or not is_run_dir(run_dir):
        raise UserError(f"--resume {run_dir}: no noisyft config.json there; is it a noisyft run directory?")
    saved = read_run_json(cfg_file)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"--resume {run_dir}: {cfg_file} is not a noisyft run config")
    unknown = sorted(set(settings) - NON_RESULT_FIELDS)
    if unknown:
        raise TypeError(f"resume() settings must be among {sorted(NON_RESULT_FIELDS)}, got {unknown}")
    config = dict(saved["config"])
    if config.get("allow_remote_code") and not allow_remote_code:
        raise UserError(f"--resume {run_dir}: this run lets backbone {config.get('backbone')!r} run its own Python code; "
                        f"a run folder cannot grant that: pass --allow-remote-code on this command line if you trust it")
    for k in NON_RESULT_FIELDS:  # defaults unless given here (a folder could name a cache path, 10,000 workers, …)
        config.pop(k, None)
    config.update({k: v for k, v in settings.items() if v is not None})
    config["out"] = str(run_dir)
    return fit(FitConfig.from_dict(config))


def detect(config: Optional[FitConfig] = None, **overrides) -> pd.DataFrame:
    """The label-issue table only: TURN's linear-probing detector (no fine-tuning unless epochs_fft is given)."""
    overrides.setdefault("epochs_fft", 0)
    overrides.setdefault("test_fraction", 0.0)
    return fit(config, **overrides).label_issues


def load_model(run_dir: str | Path, *, allow_remote_code: bool = False) -> tuple[Classifier, dict]:
    """Rebuild a run's model from its config and ``model.safetensors`` (no pickle, no download).

    Remote model code (Hugging Face ``trust_remote_code``) runs only when the caller passes
    ``allow_remote_code=True``: the run folder's own metadata never grants it.
    """
    run_dir = Path(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{weights} not found: is {run_dir} a finished noisyft run?")
    from safetensors import safe_open
    import json

    try:
        with safe_open(str(weights), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        backbone_name, image_size, classes = meta["backbone"], meta["image_size"], meta["classes"]
    except Exception as e:
        raise UserError(f"{weights} is not a noisyft model ({type(e).__name__}: {e}); is the run folder damaged?") from None
    remote = {"allow_remote_code": True} if allow_remote_code else {}
    try:
        backbone = create_backbone(backbone_name, pretrained=False, image_size=image_size, **remote)
    except Exception as e:
        if meta.get("allow_remote_code") and not allow_remote_code:
            raise UserError(f"{run_dir}: backbone {backbone_name!r} was trained with its own Python code allowed and "
                            f"does not load without it; a run folder cannot grant that: pass --allow-remote-code on "
                            f"this command line if you trust it ({type(e).__name__}: {e})") from e
        raise
    model = Classifier(backbone, len(classes))
    model.load_state_dict(load_weights(weights))
    return model.eval(), meta


def predict(run_dir: str | Path, data: str | Sequence[str], *, batch_size: int = 128, device: str = "auto",
            num_workers: Optional[int] = None, progress: bool = True, top_k: int = 1,
            allow_remote_code: bool = False) -> pd.DataFrame:
    """Predict classes for unlabelled images with a run's model; one row per image, in input order.

    ``data`` is one input or several: a folder (every image at any depth, no
    class folders needed), a ``.zip``, image files, a text file listing image
    paths, or a dataset spec (its training images); see
    :mod:`noisyft.data.inputs`. Columns: ``id``, ``predicted_label``,
    ``predicted_class``, ``confidence`` (softmax probability), and with
    ``top_k`` > 1 also ``top{k}_class`` / ``top{k}_confidence`` for k = 2…top_k.
    ``allow_remote_code``: let a Hugging Face backbone run its own code (only the caller grants it).
    """
    from noisyft.data.inputs import open_images

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    model, meta = load_model(run_dir, allow_remote_code=allow_remote_code)
    source = open_images(data)
    images = LabeledSet(source, np.full(len(source), -1), [])  # no labels: predicting needs none
    dev = resolve_device(device)
    model.to(dev)
    logits = image_logits(model, images, eval_transform(model.backbone.preprocess), device=dev, batch_size=batch_size,
                          num_workers=num_workers, desc="predict", progress=progress)
    probs = logits.softmax(1).numpy()
    classes = np.asarray(meta["classes"], dtype=object)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :min(top_k, len(classes))]
    pred = order[:, 0]
    df = pd.DataFrame({"id": source.ids, "predicted_label": pred, "predicted_class": classes[pred],
                       "confidence": probs[np.arange(len(probs)), pred]})
    for k in range(1, order.shape[1]):
        df[f"top{k + 1}_class"] = classes[order[:, k]]
        df[f"top{k + 1}_confidence"] = probs[np.arange(len(probs)), order[:, k]]
    return df


def report(run_dir: str | Path, *, classes_shown: int = 4, max_points: int = 2000, batch_size: int = 128,
           num_workers: Optional[int] = None, device: str = "auto", allow_remote_code: bool = False) -> Path:
    """Write ``RUN_DIR/report/index.html`` (plots, most suspect images, t-SNE) for a finished run; return its path.

    ``allow_remote_code``: let a Hugging Face backbone run its own code (only the caller grants it,
    never the run's config).
    """
    from noisyft.report.html import write_report

    return write_report(run_dir, classes_shown=classes_shown, max_points=max_points, batch_size=batch_size,
                        num_workers=num_workers, device=device, allow_remote_code=allow_remote_code)


DEMO = dict(data="demo", noise="sym:0.6", image_size=96, epochs_lp=20, epochs_fft=4, seed=0)


def demo(**overrides) -> FitResult:
    """TURN on the packaged CIFAR-10 sample (2,000 train / 500 test, real images) with 60% symmetric noise."""
    return fit(FitConfig(**{**DEMO, "out": "runs/demo", **overrides}))
