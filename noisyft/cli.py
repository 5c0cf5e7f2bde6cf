"""``noisyft <verb>``: a thin command line over :mod:`noisyft.api`.

Every ``fit``/``detect`` option is a FitConfig field (``--epochs-lp`` ↔
``epochs_lp``); ``--config FILE.yaml`` sets any of them, and the command line
overrides the file. User mistakes print one ``error:`` line (``--debug`` shows
the traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from noisyft.config import FitConfig, read_mapping
from noisyft.errors import UserError, one_line
from noisyft.options import field_help

REMOTE_HELP = ("let a Hugging Face backbone run its own Python code (trust_remote_code); only this flag grants it, "
               "never the run folder")


def _arg_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_config_options(p: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """One ``--long-option`` per FitConfig field; defaults stay None so config files can fill them."""
    hints = typing.get_type_hints(FitConfig)
    for f in dataclasses.fields(FitConfig):
        flag = "--" + f.name.replace("_", "-")
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        shown_default = "" if default is None else f" [default: {default}]"  # None: the help says what applies
        help_ = f"{field_help(f)}{shown_default}".replace("%", "%%")
        tp = _arg_type(hints[f.name])
        if tp is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif tp is dict:
            p.add_argument(flag, dest=f.name, action="append", default=None, metavar="KEY=VALUE", help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=tp, default=None, metavar=f.name.upper(), help=help_)
    p.add_argument("--config", help="YAML or JSON file whose keys are these option names")


def _parse_extra(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--extra {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_config_file(path: str) -> dict:
    """Keys may use - or _; unknown keys are reported by FitConfig.from_dict."""
    return {str(k).replace("-", "_"): v for k, v in read_mapping(path, "--config").items()}


def config_from_args(ns: argparse.Namespace, base: dict | None = None) -> FitConfig:
    """The FitConfig of a command line: ``base`` < ``--config`` file < options; every value checked here.

    ``--extra`` items add to (and override keys of) the file's ``extra``. Errors name where the value came
    from: ``--tau 1.5: …`` or ``--config FILE: tau 1.5: …``.
    """
    from noisyft.methods import validate_config

    values, sources = dict(base or {}), {}
    if ns.config:
        loaded = read_config_file(ns.config)
        values.update(loaded)
        where = f"--config {ns.config}"
        sources = {k: where for k in loaded}
        if isinstance(loaded.get("extra"), dict):
            sources.update({f"extra.{k}": where for k in loaded["extra"]})
    for f in dataclasses.fields(FitConfig):
        v = getattr(ns, f.name, None)
        if v is None:
            continue
        if f.name == "extra":
            given = _parse_extra(v)
            values["extra"] = {**(values.get("extra") if isinstance(values.get("extra"), dict) else {}), **given}
            for k in given:
                sources.pop(f"extra.{k}", None)
            sources.pop("extra", None)
        else:
            values[f.name] = v
            sources.pop(f.name, None)
    return validate_config(FitConfig.from_dict(values), sources)


def _print_result(res, top: int = 10) -> None:
    from noisyft import dist

    if not dist.is_main():  # a data-parallel run prints once, from rank 0
        return
    s = res.summary
    issues = res.label_issues
    cols = [c for c in ("rank", "id", "given_class", "predicted_class", "label_quality", "true_class") if c in issues]
    print(f"\nMost suspect labels (of {len(issues)}; full table in {res.run_dir / 'label_issues.csv'}):")
    print(issues[cols].head(top).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    parts = [f"run: {res.run_dir}"]
    from noisyft.run.files import METRICS_LOG
    from noisyft.run.noise_rate import noise_rate_text
    from noisyft.run.rundir import read_jsonl
    from noisyft.run.summary import accuracy_summary, headline_text

    # a run finished before summary.json had per-phase blocks: recompute them from its metrics log
    metrics = res.run_dir / METRICS_LOG
    acc = s if "test_acc" in s or not metrics.exists() else accuracy_summary(read_jsonl(metrics), s.get("delivered_epoch"))
    if headline_text(acc):
        parts.append(headline_text(acc))
    scored = [r for r in s.get("selection") or [] if "precision" in r]  # not consensus's delivery record
    if scored:
        last = scored[-1]
        parts.append(f"selection P/R/F1 {last['precision']:.3f}/{last['recall']:.3f}/{last['f1']:.3f}")
    det = s.get("detection") or {}
    if "auroc" in det:
        parts.append(f"label-issue AUROC {det['auroc']:.3f}")
    parts.append(f"flagged {int(issues['is_label_issue'].sum())}/{len(issues)}")
    if noise_rate_text(s.get("noise_rate")):
        parts.append(noise_rate_text(s["noise_rate"]))
    parts.append(f"time {s['timings']['total']:.0f}s")
    print("\n" + " | ".join(parts))


def cmd_fit(ns) -> None:
    from noisyft import api

    if ns.resume:  # the run's saved config, plus what this command line grants or sets for this machine
        from noisyft.config import NON_RESULT_FIELDS

        settings = {k: getattr(ns, k, None) for k in NON_RESULT_FIELDS if k != "out"}
        _print_result(api.resume(ns.resume, allow_remote_code=bool(ns.allow_remote_code), **settings))
        return
    _print_result(api.fit(config_from_args(ns)))


DETECT_DEFAULTS = {"method": "consensus-detect", "epochs_fft": 0, "test_fraction": 0.0}


def cmd_detect(ns) -> None:
    from noisyft import api

    cfg = config_from_args(ns, DETECT_DEFAULTS)
    _print_result(api.fit(cfg))


def cmd_demo(ns) -> None:
    from noisyft import api

    cfg = config_from_args(ns, {**api.DEMO, "out": "runs/demo"})
    print(f"demo: TURN on {cfg.data} (packaged CIFAR-10 sample) with {cfg.noise} noise, {cfg.backbone} at {cfg.image_size}px")
    _print_result(api.fit(cfg))


def cmd_predict(ns) -> None:
    from noisyft import api

    from noisyft.csvsafe import to_csv_text, write_csv

    df = api.predict(ns.run, ns.data, batch_size=ns.batch_size, device=ns.device, num_workers=ns.num_workers,
                     top_k=ns.top_k, allow_remote_code=ns.allow_remote_code)
    if ns.output:  # file and class names are escaped against spreadsheet formulas (noisyft.csvsafe)
        write_csv(ns.output, df)
        print(f"wrote {len(df)} predictions to {ns.output}")
    else:
        print(to_csv_text(df), end="")


def cmd_report(ns) -> None:
    from noisyft import api

    path = api.report(ns.run_dir, classes_shown=ns.classes_shown, max_points=ns.max_points, batch_size=ns.batch_size,
                      num_workers=ns.num_workers, device=ns.device, allow_remote_code=ns.allow_remote_code)
    print(f"wrote {path}")


def cmd_methods(ns) -> None:
    """One line per method; ``-v``: what its ``label_quality`` / ``is_label_issue`` mean (each method's own rule, so a
    user can read its label_issues.csv), its fine-tuning budget and settings with defaults and help."""
    from noisyft.methods import METHODS
    from noisyft.methods.settings import describe_method

    for name in METHODS.names():
        fn = METHODS.get(name)
        doc = (fn.__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0] if doc else ''}")
        if ns.show_settings:
            meaning = [fn.LABEL_QUALITY] if hasattr(fn, "LABEL_QUALITY") else []
            for line in meaning + describe_method(name):
                print(f"{'':18s}{line}")


def cmd_bench(ns) -> None:
    from noisyft.bench import grid, results, runner

    if bool(ns.config) == ns.quick:
        raise UserError("bench: give a grid file (--config FILE.yaml) or --quick, not both or neither")
    spec = grid.BenchSpec.from_dict(grid.QUICK, "--quick") if ns.quick else grid.load_spec(ns.config)
    out = ns.out or ("runs/bench-quick" if ns.quick else f"runs/bench-{Path(ns.config).stem}")
    ray_options = {"address": ns.address, "cpus_per_cell": ns.cpus_per_cell, "gpus_per_cell": ns.gpus_per_cell,
                   "max_retries": ns.max_retries}
    res = runner.run_bench(spec, out, plots=not ns.no_plots, run=not ns.collect_only, executor=ns.executor,
                           ray_options=ray_options if ns.executor == "ray" else None)
    print(f"\n{results.results_markdown(res)}\nwrote {out}/results.md and results.json")


def cmd_tune(ns) -> None:
    from noisyft import tune

    spec = tune.load_tune_spec(ns.config)
    out = ns.out or f"runs/tune-{Path(ns.config).stem}"
    res = tune.run_tune(spec, out, num_samples=ns.num_samples, address=ns.address, cpus_per_trial=ns.cpus_per_trial,
                        gpus_per_trial=ns.gpus_per_trial, scheduler=ns.scheduler, plots=not ns.no_plots)
    print(f"\n{tune.tune_markdown(res)}\nwrote {Path(out) / 'tune.md'} and tune.json")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options of the verbs that run a finished run's model over images (predict, report)."""
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--allow-remote-code", action="store_true", help=REMOTE_HELP)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="noisyft", description="Fine-tune pre-trained vision models on noisily labelled "
                                "images and find the wrong labels.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    fit = sub.add_parser("fit", help="train a method and write a run directory (model, metrics, label issues)",
                         description="Train a method on a (noisy) dataset; writes a run directory.")
    add_config_options(fit)
    fit.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config "
                     "(running the same command again does the same)")
    fit.set_defaults(func=cmd_fit)
    det = sub.add_parser("detect", help="write the label-issue report only (cached-feature detector, no fine-tuning)",
                         description="Rank the training labels by how likely they are wrong (consensus-detect by default: "
                                     "UNICON-LP's co-trained heads and out-of-fold probes on cached features).")
    add_config_options(det, DETECT_DEFAULTS)
    det.set_defaults(func=cmd_detect)
    demo = sub.add_parser("demo", help="TURN on the packaged CIFAR-10 sample with injected noise (offline, CPU)",
                          description="Run TURN on a packaged 2,500-image CIFAR-10 sample with 60%% symmetric noise.")
    from noisyft.api import DEMO

    add_config_options(demo, {**DEMO, "out": "runs/demo"})
    demo.set_defaults(func=cmd_demo)
    pred = sub.add_parser("predict", help="predict classes for images with a finished run's model",
                          description="Predict classes with the model of a finished run.")
    pred.add_argument("--run", required=True, help="run directory of a finished fit")
    pred.add_argument("--data", required=True, nargs="+", metavar="IMAGES",
                      help="images to predict (no labels needed): a folder (any depth), a .zip, image files, or a "
                           "text file listing image paths one per line (relative to its folder); several allowed")
    pred.add_argument("--top-k", type=int, default=1, help="also write the k most probable classes [default: 1]")
    pred.add_argument("--output", help="CSV to write (default: print)")
    add_model_options(pred)
    pred.set_defaults(func=cmd_predict)
    rep = sub.add_parser("report", help="write an HTML report of a finished run (plots, suspect images, t-SNE)",
                         description="Write RUN_DIR/report/index.html (figures embedded) and its PNGs: loss histograms "
                                     "with the GMM and τ, selection and accuracy per epoch, the most suspect images, "
                                     "t-SNE of features before/after fine-tuning.")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run directory of a finished fit")
    rep.add_argument("--classes-shown", type=int, default=4, help="classes with loss histograms on the page (all "
                     "classes get PNGs in report/classes/) [default: 4]")
    rep.add_argument("--max-points", type=int, default=2000, help="training samples in the t-SNE (0: skip it) "
                     "[default: 2000]")
    add_model_options(rep)
    rep.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="run a grid data × noise × backbone × method × seed and tabulate it (resumable)",
                           description="Run every cell of a grid (one fit each, resumable, parallel-safe) and write "
                                       "results.md, results.json and plots.")
    bench.add_argument("--config", help="YAML grid: data, noises, backbones, methods, seeds + common FitConfig fields")
    bench.add_argument("--quick", action="store_true", help="the built-in grid: every method family on the demo data")
    bench.add_argument("--out", help="bench directory (default runs/bench-<config name> or runs/bench-quick)")
    bench.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bench.add_argument("--collect-only", action="store_true", help="run nothing: tabulate the cells finished so far")
    bench.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: cells one after another in this process; ray: cells as Ray tasks on a local Ray or "
                            "the cluster of --address (needs pip install -e \".[dist]\") [default: local]")
    bench.add_argument("--address", help="with --executor ray: the Ray cluster (auto, ray://HOST:10001); default: a local Ray")
    bench.add_argument("--cpus-per-cell", type=float, default=1, help="with --executor ray: CPUs a cell holds (and its "
                       "torch threads) [default: 1]")
    bench.add_argument("--gpus-per-cell", type=float, default=0, help="with --executor ray: GPUs a cell holds [default: 0]")
    bench.add_argument("--max-retries", type=int, default=2, help="with --executor ray: retries of a failed cell "
                       "[default: 2]")
    bench.set_defaults(func=cmd_bench)
    tun = sub.add_parser("tune", help="search fit settings with Ray Tune, scored on the noisy validation split",
                         description="Search fit settings with Ray Tune (pip install -e \".[dist]\"): each trial is a "
                                     "run directory OUT/trials/<id> (resumable; finished trials are not rerun), scored "
                                     "on the noisy validation split (val_fraction), never the test split. Writes "
                                     "OUT/tune.json, tune.md and tune.png.")
    tun.add_argument("--config", required=True, help="YAML: fit settings (as fit --config) plus a search: block, e.g. "
                     "search: {lr_fft: {loguniform: [1e-5, 1e-3]}, gce_q: {choice: [0.5, 0.7]}}")
    tun.add_argument("--out", help="tune directory (default runs/tune-<config name>)")
    tun.add_argument("--num-samples", type=int, default=1, help="random draws (per grid point) [default: 1]")
    tun.add_argument("--address", help="Ray cluster to run the trials on (auto, ray://HOST:10001); default: a local Ray")
    tun.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs a trial holds (its torch threads) [default: 1]")
    tun.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs a trial holds [default: 0]")
    tun.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo",
                     help="fifo: every trial runs to the end; asha: stop weak trials early at equal epochs [default: fifo]")
    tun.add_argument("--no-plots", action="store_true", help="skip tune.png")
    tun.set_defaults(func=cmd_tune)
    meth = sub.add_parser("methods", help="list the registered methods (-v: what their label_issues.csv columns mean, "
                                          "their settings)",
                          description="List the registered methods; -v also says what each method's label_quality and "
                                      "is_label_issue mean (each method's own rule), its fine-tuning budget and its "
                                      "settings (--extra KEY=VALUE) with defaults and help.")
    meth.add_argument("-v", "--verbose", dest="show_settings", action="store_true",
                      help="show every method's label_quality / is_label_issue meaning and settings with defaults and help")
    meth.set_defaults(func=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed usage and "error: …" (exit 2); --help still exits normally
        if e.code in (0, None):
            raise
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        ns.func(ns)
    except UserError as e:
        if ns.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        if getattr(e, "on_every_rank", False):  # every rank prints rank 0's refusal before any exits: the
            from noisyft import dist  # launcher stops the others when the first one exits

            dist.barrier()
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to continue", file=sys.stderr)
        return 130
    except Exception as e:  # a diverged loss and other run failures: one line unless --debug
        from noisyft.engine import TrainingDiverged

        if ns.debug or not isinstance(e, TrainingDiverged):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
