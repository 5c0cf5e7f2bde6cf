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

from noisyft import dist
from noisyft.backbones import create_backbone
from noisyft.config import NON_RESULT_FIELDS, FitConfig, parse_optim
from noisyft.csvsafe import read_csv
from noisyft.data.base import DataSplits, LabeledSet
from noisyft.data.inputs import open_images
from noisyft.data.prepare import prepare_data
from noisyft.data.transforms import eval_transform
from noisyft.engine import image_logits, resolve_device
from noisyft.errors import UserError
from noisyft.losses import per_sample_ce
from noisyft.methods import DATA_PARALLEL, METHODS, Context, MethodOutput, validate_config
from noisyft.run.files import CONFIG, DATA, LABEL_ISSUES, LABELS, NOISE, OPTIM, SUMMARY
from noisyft.run.label_issues import label_issues_frame
from noisyft.run.losses import save_losses
from noisyft.run.model import load_model, model_meta
from noisyft.run.noise_rate import FINAL_MODEL, noise_rate_block
from noisyft.run.rundir import FollowerRunDir, RunDir, is_run_dir, read_run_json
from noisyft.run.summary import run_summary
from noisyft.selection import fit_per_class_gmm

__all__ = ["FitResult", "fit", "resume", "detect", "predict", "report", "demo", "load_model", "prepare_data", "DEMO"]

log = logging.getLogger("noisyft")


@dataclass
class FitResult:
    """What a fit leaves: the run directory, headline numbers, the label-issue table and the model."""

    run_dir: Path
    summary: dict
    label_issues: pd.DataFrame
    model: Optional[torch.nn.Module] = None


def _labels_frame(data: LabeledSet) -> pd.DataFrame:
    df = pd.DataFrame({"index": np.arange(len(data)), "id": data.ids, "given_label": data.labels,
                       "given_class": np.asarray(data.classes, dtype=object)[data.labels]})
    if data.true_labels is not None:
        df["true_label"] = data.true_labels
    return df


def finish(ctx: Context, out: MethodOutput, splits: DataSplits, noise_info: dict) -> FitResult:
    """Write the label-issue table, the model and the summary of a finished method."""
    cfg, run, train = ctx.cfg, ctx.run, ctx.train
    losses = per_sample_ce(out.train_logits, torch.as_tensor(train.labels)).numpy()
    gmm = fit_per_class_gmm(losses, train.labels, train.num_classes)
    clean_prob = gmm.clean_prob if out.clean_prob is None else out.clean_prob
    save_losses(run, "final", losses, gmm, cfg.tau, used_for_label_issues=out.clean_prob is None)
    issues = label_issues_frame(train.ids, train.labels, out.train_logits, clean_prob, train.classes, tau=cfg.tau,
                                true_labels=train.true_labels, is_issue=out.is_issue)
    run.write_frame(LABEL_ISSUES, issues)
    run.save_model(out.model, model_meta(cfg.backbone, ctx.backbone, train.classes, cfg.allow_remote_code))
    summary = run_summary(cfg, run, issues, splits, noise_info, noise_rate=_noise_rate(ctx, out, issues),
                          delivered_epoch=out.info.get("delivered_epoch"))
    summary.update(_extra_tests(ctx, out.model, splits))
    run.write_json(SUMMARY, summary)
    run.close()
    run.finish("done")
    run.drop_checkpoint()
    return FitResult(run.path, summary, issues, out.model)


def _extra_tests(ctx: Context, model: torch.nn.Module, splits: DataSplits) -> dict:
    """``test_acc_<name>`` and ``n_test_<name>`` of the delivered model on each further test set of the data
    (WebVision's ILSVRC2012 validation images: ``test_acc_imagenet``)."""
    out = {}
    for name, data in splits.extra_tests.items():
        logits = image_logits(model, data, ctx.eval_tf(), device=ctx.device, batch_size=ctx.cfg.batch_size,
                              num_workers=ctx.cfg.num_workers, desc=f"eval:{name}", progress=ctx.cfg.progress)
        out[f"test_acc_{name}"] = float((logits.argmax(1).numpy() == data.labels).mean())
        out[f"n_test_{name}"] = len(data)
    return out


def _noise_rate(ctx: Context, out: MethodOutput, issues: pd.DataFrame) -> dict:
    """The ``noise_rate`` summary block: the share the method flags, cleanlab's confident joint, the truth if known."""
    train, tau = ctx.train, ctx.cfg.tau
    if out.is_issue is not None:
        rule = "the method's own verdict (is_label_issue; `noisyft methods -v` says what it is per method)"
    elif out.clean_prob is not None:
        rule = f"the method's clean probability <= tau ({tau:g})"
    else:
        rule = f"per-class GMM on the final model's CE losses: clean posterior <= tau ({tau:g})"
    flagged = issues.sort_values("index")["is_label_issue"].to_numpy(dtype=bool)
    if out.pred_probs is not None:
        probs, source = np.asarray(out.pred_probs), "the method's detector probabilities (MethodOutput.pred_probs)"
    else:
        probs, source = torch.as_tensor(out.train_logits).float().softmax(1).numpy(), FINAL_MODEL
    return noise_rate_block(train.labels, train.classes, flagged, rule=rule, pred_probs=probs, probs_source=source,
                            true_labels=train.true_labels)


def fit(config: Optional[FitConfig] = None, **overrides) -> FitResult:
    """Train ``config.method`` on the data and write a run directory; see FitConfig for every option.

    Running the same configuration again returns the finished run instead of
    recomputing it (features are cached across runs and methods regardless).
    """
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = validate_config(FitConfig.from_dict({**base, **overrides}))  # unknown keys and every value, before any work
    method = METHODS.get(cfg.method)
    dist.init_from_env(cfg.device)  # a torchrun / accelerate launch: join the other ranks (nothing alone)
    world = dist.world_size()
    if world > 1:
        check_data_parallel(cfg.method, world)
        if not dist.is_main():
            cfg = dataclasses.replace(cfg, progress=False)  # one progress bar: rank 0's
    # rank 0 creates and locks the run directory (refusing a foreign folder); its error, if any, stops every rank
    run = dist.on_main(lambda: RunDir(cfg.run_dir(), cfg.identity(), dataclasses.asdict(cfg),
                                      launch={"world_size": world} if world > 1 else None), share=False)
    if not dist.is_main():
        run = FollowerRunDir(cfg.run_dir())
    try:
        return _fit_in(run, cfg, method)
    finally:
        run.release()


def check_data_parallel(method: str, world: int) -> None:
    """Refuse, in one line, a method that cannot run data-parallel yet."""
    if method not in DATA_PARALLEL:
        raise UserError(f"--method {method}: not supported with {world} processes (torchrun / accelerate launch); "
                        f"run it as one process, or use one of: {', '.join(sorted(DATA_PARALLEL))}")


def _fit_in(run: RunDir, cfg: FitConfig, method) -> FitResult:
    """``fit`` inside its locked run directory."""
    if dist.broadcast_object("done" in run.state["finished"] and run.file(LABEL_ISSUES).exists()):
        log.info("run %s already finished; returning its results", run.path)
        return FitResult(run.path, run.read_json(SUMMARY), read_csv(run.file(LABEL_ISSUES)))
    splits, val, noise_info = prepare_data(cfg)
    checkpoint = run.load_checkpoint() if dist.is_main() else None
    # rank 0 reads it first (a damaged checkpoint is its one-line error, on every rank); the others then read it too
    if dist.broadcast_object(checkpoint is not None) and not dist.is_main():
        checkpoint = run.load_checkpoint()
    if checkpoint and dist.is_main():
        log.warning("resuming %s from %s epoch %d", run.path, checkpoint["tag"], checkpoint["epoch"])
    run.start(checkpoint)
    run.write_frame(LABELS, _labels_frame(splits.train))
    run.write_json(NOISE, noise_info)
    run.write_json(DATA, splits.info)
    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, image_size=cfg.image_size,
                               allow_remote_code=cfg.allow_remote_code)
    lp_default, fft_default = backbone.hparams
    ctx = Context(cfg, splits.train, splits.test, val, backbone, run, dist.device(cfg.device),
                  parse_optim(cfg.lp_optim, lp_default, "lp-optim"), parse_optim(cfg.fft_optim, fft_default, "fft-optim"),
                  resume_state=checkpoint)
    run.write_json(OPTIM, {"lp": dataclasses.asdict(ctx.lp_optim), "fft": dataclasses.asdict(ctx.fft_optim)})
    out = method(ctx)
    if dist.world_size() <= 1:
        return finish(ctx, out, splits, noise_info)
    result = dist.on_main(lambda: finish(ctx, out, splits, noise_info), share=False)  # rank 0 writes; the others wait
    if dist.is_main():
        return result
    return FitResult(run.path, run.read_json(SUMMARY), read_csv(run.file(LABEL_ISSUES)))


def resume(run_dir: str | Path, *, allow_remote_code: bool = False, **settings) -> FitResult:
    """Continue (or return, if finished) the run in ``run_dir`` with the configuration it was started with.

    The run folder's config is data, never a permission: a run started with remote model
    code allowed resumes only with ``allow_remote_code=True`` given here (``--allow-remote-code``
    on the command line). Settings that do not change results (``device``, ``num_workers``,
    ``cache_dir``, ``progress``, ``image_cache_mb``) come from this call, not from the folder,
    so a shared run cannot choose where noisyft writes its feature cache.
    """
    run_dir = Path(run_dir)
    cfg_file = run_dir / CONFIG
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
    """The label-issue table only: by default ``consensus-detect`` on cached features (no fine-tuning), the
    best-ranking detector of the committed benchmarks; any method may be named instead."""
    if config is None:
        overrides.setdefault("method", "consensus-detect")
    overrides.setdefault("epochs_fft", 0)
    overrides.setdefault("test_fraction", 0.0)
    return fit(config, **overrides).label_issues


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
    from noisyft.report.html import write_report  # here: matplotlib loads only when a report is drawn

    return write_report(run_dir, classes_shown=classes_shown, max_points=max_points, batch_size=batch_size,
                        num_workers=num_workers, device=device, allow_remote_code=allow_remote_code)


DEMO = dict(method="turn", data="demo", noise="sym:0.6", image_size=96, epochs_lp=20, epochs_fft=4, seed=0)


def demo(**overrides) -> FitResult:
    """TURN on the packaged CIFAR-10 sample (2,000 train / 500 test, real images) with 60% symmetric noise."""
    return fit(FitConfig(**{**DEMO, "out": "runs/demo", **overrides}))
