"""``noisyft tune``: search fit settings with Ray Tune, scored on the noisy validation split, never the test split.

The config file holds ordinary fit settings (the keys of ``noisyft fit --config`` files, checked by the
same :func:`noisyft.methods.validate_config`) plus a ``search:`` block, one entry per searched setting::

    method: turn
    data: cifar10:/data/cifar10
    noise: sym:0.6
    val_fraction: 0.1          # required: trials are scored on this noisy validation split
    search:
      lr_fft: {loguniform: [1.0e-5, 1.0e-3]}   # the FFT learning rate (lr_lp: the linear probe's)
      gce_q: {choice: [0.5, 0.7]}
      tau: {uniform: [0.5, 0.8]}
      epochs_fft: {randint: [2, 6]}           # 2 to 5 (the high end is excluded, as in numpy and Ray)
      extra.warmup: {grid: [1, 2]}            # every value, each crossed with num_samples random draws

A searched key is a FitConfig field, ``extra.<method setting>``, or ``lr_lp`` / ``lr_fft`` (the learning
rate of ``lp_optim`` / ``fft_optim``; the optimiser's name and weight decay stay the configured ones or the
backbone's paper setting). Every value a search entry can produce (each choice / grid value, both ends of a
range) is validated before anything runs.

**Trials.** Each trial is one :func:`noisyft.api.fit` writing an ordinary run directory
``OUT/trials/<method>-<hash of its settings>``: its identity is its settings, so a second ``tune`` with
the same file (the sampler is seeded by the config's ``seed``) finds its finished trials and trains
nothing again, and a killed one resumes from its checkpoint. Trials that draw the same settings share
one directory (the second waits for the first and reuses it). Paths handed to trials are absolute
(Tune runs a trial in a folder of its own); a trial holds ``cpus_per_trial`` CPUs, and torch uses that
many threads. Features are extracted once, in the driver, before the trials (a shared cache; on a
cluster put it and ``OUT`` on a filesystem every node mounts at the same path).

**Objective.** ``val_acc``: accuracy on the noisy validation split (its given labels, possibly wrong) of
the delivered phase (fine-tuning for a fine-tuning method) at the epoch the validation split selects, the
rule the bench's headline uses. Each logged epoch is reported to Tune as it happens (the linear probe's,
then fine-tuning's), so ASHA can stop weak trials early; a final report repeats the objective.

**Results.** ``OUT/tune.json`` (every trial: settings, status, objective, run directory; the best),
``OUT/tune.md`` (the best trial and a table; test accuracy only beside, marked as not used) and
``OUT/tune.png`` (validation accuracy per reported epoch, and per trial).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from noisyft.atomic import write_json, write_text
from noisyft.bench.grid import cell_finished
from noisyft.config import NON_RESULT_FIELDS, FitConfig, OptimConfig, parse_optim, read_mapping
from noisyft.errors import UserError, one_line
from noisyft.options import did_you_mean
from noisyft.ray_session import ray_session, require_ray, torch_threads
from noisyft.run.files import METRICS_LOG, SUMMARY
from noisyft.runlock import RunLock

log = logging.getLogger("noisyft")

KINDS = ("loguniform", "uniform", "randint", "choice", "grid")
LR_KEYS = {"lr_lp": ("lp_optim", 0), "lr_fft": ("fft_optim", 1)}  # key → (optimiser field, index in Backbone.hparams)
SCHEDULERS = ("fifo", "asha")
OBJECTIVE = "val_acc"
# settings that only change training, never the images or the backbone: no feature extraction per value
TRAINING_ONLY = {"method", "epochs_lp", "epochs_fft", "tau", "gce_q", "batch_size", "lp_optim", "fft_optim", "augment",
                 "freeze_bn_stats", "noise", "extra", *LR_KEYS}
PATH_FIELDS = ("data", "labels", "test")
MAX_WARM = 16  # feature settings the driver extracts at most (choice × grid values of image-changing keys)


# ---------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``key`` drawn by ``kind`` from ``args`` (two bounds, or the values)."""

    key: str
    kind: str
    args: tuple

    def candidates(self) -> list:
        """The values validation checks: every choice / grid value, or both ends of a range."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)

    def domain(self):
        """The Ray Tune sampler of this dimension."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def to_dict(self) -> dict:
        return {self.kind: list(self.args)}


def _searchable(key: str) -> bool:
    names = {f.name for f in dataclasses.fields(FitConfig)}
    if key.startswith("extra."):
        return len(key) > len("extra.")
    return key in LR_KEYS or (key in names and key not in NON_RESULT_FIELDS and key != "extra")


def parse_dimension(key: Any, spec: Any, where: str) -> Dimension:
    """One ``search:`` entry, its shape checked (the values themselves are checked by :meth:`TuneSpec.validate`)."""
    key = str(key).replace("-", "_")
    here = f"{where}.{key}"
    if not _searchable(key):
        names = [f.name for f in dataclasses.fields(FitConfig) if f.name not in NON_RESULT_FIELDS | {"extra"}]
        raise UserError(f"{here}: not a searchable fit setting{did_you_mean(key, names + list(LR_KEYS))} "
                        f"(a FitConfig field, extra.<method setting>, lr_lp or lr_fft)")
    usage = f"expected one of {', '.join(KINDS)}, e.g. {key}: {{choice: [a, b]}}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UserError(f"{here}: {usage}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, (list, tuple)) or not args:
        raise UserError(f"{here}: {kind} needs a non-empty list ({usage})")
    if kind in ("choice", "grid"):
        return Dimension(key, kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                                 for a in args):
        raise UserError(f"{here}: {kind} needs two finite numbers [low, high], got {list(args)}")
    low, high = args
    if not low < high:
        raise UserError(f"{here}: {kind} [{low}, {high}]: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{here}: loguniform [{low}, {high}]: both bounds must be > 0")
    if kind == "randint":
        if not all(float(a).is_integer() for a in args):
            raise UserError(f"{here}: randint [{low}, {high}]: bounds must be whole numbers (high is excluded)")
        if high - low < 1:
            raise UserError(f"{here}: randint [{low}, {high}]: empty (high is excluded)")
        return Dimension(key, kind, (int(low), int(high)))
    return Dimension(key, kind, (float(low), float(high)))


def _plain(value: Any) -> Any:
    """A sampled value as plain Python (Tune may hand numpy scalars), so identities and messages read as typed."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def apply_point(settings: dict, point: dict, optim_defaults: Optional[dict] = None) -> dict:
    """Fit settings for one sampled ``point`` (``{key: value}``) of the search over ``settings``.

    ``lr_lp`` / ``lr_fft`` become ``lp_optim`` / ``fft_optim`` with that learning rate; the optimiser's name
    and weight decay come from the configured optimiser, else from ``optim_defaults[backbone]`` (the
    backbone's paper setting, ``[[name, weight_decay], [name, weight_decay]]`` for LP and FFT).
    """
    values = dict(settings)
    extra = dict(values.get("extra") or {})
    point = {k: _plain(v) for k, v in point.items()}
    for key, value in point.items():
        if key.startswith("extra."):
            extra[key[len("extra."):]] = value
        elif key not in LR_KEYS:
            values[key] = value
    values["extra"] = extra
    for key, value in point.items():
        if key in LR_KEYS:
            field, phase = LR_KEYS[key]
            name, wd = ((optim_defaults or {}).get(values.get("backbone", FitConfig.backbone)) or
                        [["adamw", 1e-5], ["adamw", 1e-5]])[phase]
            base = parse_optim(values.get(field), OptimConfig(name, 1.0, wd), field)
            values[field] = f"{base.name}:{float(value)!r}:{float(base.weight_decay)!r}"
    return values


# ---------------------------------------------------------------------------
# The tune file
# ---------------------------------------------------------------------------


@dataclass
class TuneSpec:
    """Fit settings shared by every trial and the search over some of them."""

    settings: dict
    search: list[Dimension]
    source: str = "tune config"

    @classmethod
    def from_dict(cls, d: dict, source: str = "tune config") -> "TuneSpec":
        """Validate a tune mapping: settings as ``fit --config`` files, a ``search:`` block; one-line errors."""
        d = {str(k).replace("-", "_"): v for k, v in d.items()}
        raw = d.pop("search", None)
        if not isinstance(raw, dict) or not raw:
            raise UserError(f"{source}: needs a search: block mapping settings to ranges, e.g. "
                            f"search: {{lr_fft: {{loguniform: [1.0e-5, 1.0e-3]}}}}")
        if "out" in d:
            raise UserError(f"{source}: out is set by tune (each trial writes OUT/trials/<id>; give --out OUT)")
        # in key order: the seeded sampler then draws the same points however the file orders its keys
        search = sorted((parse_dimension(k, v, f"{source}: search") for k, v in raw.items()), key=lambda d: d.key)
        keys = [s.key for s in search]
        extra = d.get("extra") if isinstance(d.get("extra"), dict) else {}
        for dim in search:
            if dim.key in d or (dim.key.startswith("extra.") and dim.key[len("extra."):] in extra):
                raise UserError(f"{source}: search.{dim.key}: also set outside search (drop one of the two)")
            if dim.key in LR_KEYS and LR_KEYS[dim.key][0] in keys:
                raise UserError(f"{source}: search.{dim.key}: {LR_KEYS[dim.key][0]} is searched too (drop one of the two)")
        if len(set(keys)) != len(keys):
            raise UserError(f"{source}: search names a setting twice (as - and _ spellings?)")
        FitConfig.from_dict(d)  # unknown settings → one line with suggestions
        spec = cls(settings=d, search=search, source=source)
        spec.validate()
        return spec

    def validate(self) -> None:
        """The settings and every value the search can produce, through the fit's own validation."""
        from noisyft.methods import validate_config

        sources = {k: self.source for k in self.settings}
        sources |= {f"extra.{k}": self.source for k in (self.settings.get("extra") or {})}
        base = validate_config(FitConfig.from_dict(self.settings), sources)
        for dim in self.search:
            for value in dim.candidates():
                if dim.key in LR_KEYS:
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                        raise UserError(f"{self.source}: search.{dim.key} {value!r}: a learning rate must be a positive number")
                point_sources = sources | {dim.key: f"{self.source}: search"}
                validate_config(FitConfig.from_dict(apply_point(self.settings, {dim.key: value})), point_sources)
        vals = next((d.candidates() for d in self.search if d.key == "val_fraction"), [base.val_fraction])
        if min(vals) <= 0:
            raise UserError(f"{self.source}: val_fraction: tune scores trials on the noisy validation split, never the "
                            f"test split; set val_fraction (e.g. 0.1)")

    def to_dict(self) -> dict:
        return {**self.settings, "search": {d.key: d.to_dict() for d in self.search}}


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read a YAML/JSON tune file."""
    return TuneSpec.from_dict(read_mapping(path, "--config"), f"--config {path}")


# ---------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------


def _absolute(spec: Optional[str]) -> Optional[str]:
    """``spec`` with each ``:``-separated part that names an existing path made absolute (``cifar10:data`` too)."""
    if not spec:
        return spec
    if Path(spec).exists():
        return str(Path(spec).resolve())
    parts = spec.split(":")
    return ":".join(str(Path(p).resolve()) if p and Path(p).exists() else p for p in parts)


def trial_settings(settings: dict, cpus: float) -> dict:
    """The shared settings as trials get them: absolute paths and cache, no progress bars, workers to fit the CPUs."""
    from noisyft.features.cache import default_cache_dir

    out = dict(settings)
    for name in PATH_FIELDS:
        if out.get(name):
            out[name] = _absolute(out[name])
    out["cache_dir"] = str(Path(out.get("cache_dir") or default_cache_dir()).expanduser().resolve())
    out["progress"] = False
    out.setdefault("num_workers", max(0, torch_threads(cpus) - 1))
    return out


def trial_config(settings: dict, point: dict, optim_defaults: dict, trials_dir: Path) -> FitConfig:
    """A trial's FitConfig: the settings with ``point`` applied, writing ``trials_dir/<method>-<settings hash>``."""
    from noisyft.methods import validate_config

    cfg = validate_config(FitConfig.from_dict(apply_point(settings, point, optim_defaults)))
    return dataclasses.replace(cfg, out=str(Path(trials_dir) / f"{cfg.method}-{cfg.digest()}"))


def _logged(path: Path) -> list[dict]:
    """The complete records of a run's metrics log so far (a line being written is left for the next look)."""
    try:
        text = (path / METRICS_LOG).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.split("\n")[:-1]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def trial_objective(path: Path) -> dict:
    """The objective of a run directory: the delivered phase's validation-selected epoch (first best val acc).

    ``val_acc`` and ``val_epoch`` (``fft:3``), with ``test_acc`` of that epoch beside (None without a test
    split); ``val_acc`` None when the run logged no validation accuracy (yet).
    """
    recs = [r for r in _logged(Path(path)) if OBJECTIVE in r]
    if not recs:
        return {"val_acc": None, "val_epoch": None, "test_acc": None, "epochs_reported": 0}
    phase = recs[-1].get("phase")
    chosen = max((r for r in recs if r.get("phase") == phase), key=lambda r: r[OBJECTIVE])
    return {"val_acc": float(chosen[OBJECTIVE]), "val_epoch": f"{chosen.get('phase')}:{chosen.get('epoch')}",
            "test_acc": chosen.get("test_acc"), "epochs_reported": len(recs)}


def run_trial(point: dict, job: dict) -> None:
    """One Tune trial (runs in a Ray worker): fit the point's settings, reporting each logged validation accuracy.

    The fit runs in a thread of its own; this (Tune's) thread reports the run's metrics records as they
    are logged, so a scheduler can stop the trial between epochs (the process then ends, and the run
    directory keeps its last checkpoint). A finished run is not trained again: its records are replayed.
    """
    import torch
    from ray import tune

    torch.set_num_threads(torch_threads(job["cpus"]))
    cfg = trial_config(job["settings"], point, job["optim_defaults"], Path(job["trials_dir"]))
    path = Path(cfg.out)
    box: dict = {}

    def work() -> None:
        try:
            from noisyft.api import fit

            # trials that drew the same settings share a run directory: the later one waits, then reuses it
            # (a lock of its own beside bench's cell locks, OUT/locks/<trial>.lock: fit takes RUN_DIR/.lock itself)
            lock_file = path.parent.parent / "locks" / f"{path.name}.lock"
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            with RunLock(path, wait=True, lock_file=lock_file):
                box["reused"] = cell_finished(path)
                fit(cfg)
        except BaseException as e:  # re-raised in Tune's thread below
            box["error"] = e

    worker = threading.Thread(target=work, name=f"noisyft-trial-{path.name}", daemon=True)
    worker.start()
    sent = 0
    while True:
        alive = worker.is_alive()  # read before the log: the records written before the end are all seen
        recs = [r for r in _logged(path) if OBJECTIVE in r]
        for r in recs[sent:]:
            tune.report({OBJECTIVE: float(r[OBJECTIVE]), "epoch": f"{r.get('phase')}:{r.get('epoch')}",
                         "trial": path.name})
        sent = max(sent, len(recs))
        if not alive:
            break
        worker.join(0.5)
    if "error" in box:
        raise box["error"]
    obj = trial_objective(path)
    if obj[OBJECTIVE] is None:
        raise UserError(f"method {cfg.method} logged no validation accuracy, so tune cannot score it")
    # the test accuracy stays out of Tune's results: nothing downstream should be able to select on it
    tune.report({OBJECTIVE: obj[OBJECTIVE], "epoch": obj["val_epoch"], "trial": path.name,
                 "reused": bool(box.get("reused")), "final": True})


# ---------------------------------------------------------------------------
# Features, once, in the driver
# ---------------------------------------------------------------------------


def _feature_settings(spec: TuneSpec, settings: dict) -> list[dict]:
    """The distinct settings whose images or backbone differ: one per combination of searched values of keys
    that change features (choice / grid only; a sampled range of such a key is left to the trials)."""
    dims = [d for d in spec.search if d.key not in TRAINING_ONLY and not d.key.startswith("extra.")]
    listed = [d for d in dims if d.kind in ("choice", "grid")]
    for d in dims:
        if d not in listed:
            log.warning("tune: %s is sampled from a range: each trial extracts the features it needs", d.key)
    combos = [dict(zip([d.key for d in listed], values)) for values in itertools.product(*[d.args for d in listed])]
    if len(combos) > MAX_WARM:
        log.warning("tune: %d feature settings; extracting the first %d before the trials", len(combos), MAX_WARM)
    return [{**settings, **c} for c in combos[:MAX_WARM]]


def warm_features(spec: TuneSpec, settings: dict, echo: Callable[[str], None] = print) -> dict:
    """Extract (or find cached) the features every trial will read; return each backbone's optimiser defaults.

    Same data preparation and backbone seeding as :func:`noisyft.api.fit`, so the trials hit these entries.
    """
    import torch

    from noisyft.backbones import create_backbone
    from noisyft.data.prepare import prepare_data
    from noisyft.engine import resolve_device
    from noisyft.features.cache import extract_features
    from noisyft.methods import validate_config

    defaults: dict = {}
    progress = spec.settings.get("progress", True) is not False  # trials run without bars; the driver may show them
    for values in _feature_settings(spec, settings):
        cfg = validate_config(FitConfig.from_dict(values))
        t = time.perf_counter()
        splits, val, _ = prepare_data(cfg)
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, image_size=cfg.image_size,
                                   allow_remote_code=cfg.allow_remote_code)
        lp, fft = backbone.hparams
        defaults[cfg.backbone] = [[lp.name, lp.weight_decay], [fft.name, fft.weight_decay]]
        device = resolve_device(cfg.device)
        for split, data in (("train", splits.train), ("val", val), ("test", splits.test)):
            if data is not None:
                extract_features(backbone, data.source, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size,
                                 num_workers=cfg.num_workers, device=device, progress=progress,
                                 desc=f"features:{split}")
        echo(f"features of {cfg.backbone} on {cfg.data} ready in {time.perf_counter() - t:.0f}s ({cfg.cache_dir})")
    return defaults


# ---------------------------------------------------------------------------
# Running the search
# ---------------------------------------------------------------------------


def _scheduler(name: str, spec: TuneSpec):
    if name == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # compare trials no earlier than the end of the (shortest) linear probe: a rung inside it judges probes only
    lp = next((d.candidates() for d in spec.search if d.key == "epochs_lp"), [spec.settings.get("epochs_lp", 20)])
    return ASHAScheduler(time_attr="training_iteration", max_t=100_000, grace_period=max(1, int(min(lp))),
                         reduction_factor=2)


def run_tune(spec: TuneSpec, out: str | Path, *, num_samples: int = 1, address: Optional[str] = None,
             cpus_per_trial: float = 1, gpus_per_trial: float = 0, scheduler: str = "fifo", verbose: int = 1,
             plots: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Run the search of ``spec`` into ``out``; write ``tune.json``, ``tune.md`` (and ``tune.png``); return the results.

    ``num_samples`` draws per grid point (Tune's meaning); ``address``: a Ray cluster (``auto``,
    ``ray://host:10001``), default a local Ray (or the one already started in this process).
    """
    if num_samples < 1:
        raise UserError(f"--num-samples {num_samples}: must be at least 1")
    if not cpus_per_trial > 0 or gpus_per_trial < 0:
        raise UserError(f"--cpus-per-trial {cpus_per_trial} / --gpus-per-trial {gpus_per_trial}: CPUs must be > 0, "
                        f"GPUs >= 0")
    if scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {scheduler}: choose from {', '.join(SCHEDULERS)}")
    require_ray("noisyft tune")  # before any extraction
    out = Path(out).resolve()
    trials_dir = out / "trials"
    settings = trial_settings(spec.settings, cpus_per_trial)
    optim_defaults = warm_features(spec, settings, echo)
    job = {"settings": settings, "optim_defaults": optim_defaults, "trials_dir": str(trials_dir), "cpus": cpus_per_trial}
    seed = int(spec.settings.get("seed", 0) or 0) if not any(d.key == "seed" for d in spec.search) else 0
    started = time.time()
    with ray_session(address, "noisyft tune") as ray:  # noqa: F841 (the session is what matters)
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        def trainable(point: dict) -> None:
            run_trial(point, job)

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space={d.key: d.domain() for d in spec.search},
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", num_samples=num_samples,
                                        scheduler=_scheduler(scheduler, spec),
                                        # one process runs trial after trial (imports once); not under ASHA, whose
                                        # stopped trial leaves its fit thread behind: there the process must end
                                        reuse_actors=scheduler == "fifo",
                                        search_alg=BasicVariantGenerator(random_state=seed)),
            run_config=tune.RunConfig(storage_path=str(out / "ray"), name="tune", verbose=verbose))
        grid = tuner.fit()
        outcomes = [(dict(r.config or {}), r.error, dict(r.metrics or {})) for r in grid]
    result = collect_trials(spec, outcomes, settings, optim_defaults, trials_dir)
    result.update(num_samples=num_samples, scheduler=scheduler, sampler_seed=seed, address=address,
                  cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, seconds=time.time() - started)
    write_tune_results(out, result, plots=plots)
    return result


def collect_trials(spec: TuneSpec, outcomes: list[tuple[dict, Any, dict]], settings: dict, optim_defaults: dict,
                   trials_dir: Path) -> dict:
    """One row per distinct trial (from its run directory, not from Tune's memory) and the best finished one."""
    rows: dict[str, dict] = {}
    for point, error, metrics in outcomes:
        point = {d.key: _plain(point[d.key]) for d in spec.search if d.key in point}
        path = Path(trial_config(settings, point, optim_defaults, trials_dir).out)
        if path.name in rows:
            rows[path.name]["samples"] += 1
            continue
        status = "done" if cell_finished(path) else ("failed" if error is not None else "stopped")
        row = {"trial": path.name, "run_dir": str(path), "status": status, "settings": point, "samples": 1,
               **trial_objective(path), "reused": bool(metrics.get("reused"))}
        if status == "done":
            summary = json.loads((path / SUMMARY).read_text())
            row["test_acc_headline"] = summary.get("test_acc")
        if error is not None:
            row["error"] = one_line(getattr(error, "cause", None) or error) if isinstance(error, BaseException) else str(error)
        rows[path.name] = row
    done = sorted((r for r in rows.values() if r["status"] == "done" and r["val_acc"] is not None),
                  key=lambda r: r["trial"])  # ties go to the first trial by name, whatever order Tune ends them in
    best = max(done, key=lambda r: r["val_acc"]) if done else None
    return {"spec": spec.to_dict(), "settings": settings, "objective": OBJECTIVE_TEXT, "trials": list(rows.values()),
            "best": best, "counts": {s: sum(r["status"] == s for r in rows.values()) for s in ("done", "stopped", "failed")}}


OBJECTIVE_TEXT = ("val_acc: accuracy on the noisy validation split (given labels) of the delivered phase at the epoch "
                  "that split selects; the test split is never used to choose")


# ---------------------------------------------------------------------------
# tune.json, tune.md, tune.png
# ---------------------------------------------------------------------------


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def tune_markdown(result: dict) -> str:
    """``tune.md``: the best trial (its settings, validation accuracy; test accuracy beside, marked) and every trial."""
    keys = list(result["spec"]["search"])
    best = result["best"]
    lines = ["# noisyft tune", "", f"Objective: {result['objective']}.", ""]
    if best is None:
        lines += ["**No trial finished.**", ""]
    else:
        settings = ", ".join(f"{k}={_value(v)}" for k, v in best["settings"].items())
        lines += [f"**Best trial: `{best['trial']}`** (run directory `{best['run_dir']}`)", "",
                  f"- settings: {settings}",
                  f"- validation accuracy (noisy split): **{_pct(best['val_acc'])}%** at {best['val_epoch']}",
                  f"- test accuracy at that epoch: {_pct(best['test_acc'])}% (shown for reference only; "
                  f"NOT used to choose)", ""]
    c = result["counts"]
    lines += [f"Trials: {len(result['trials'])} ({c['done']} done, {c['stopped']} stopped early, {c['failed']} failed).", "",
              "| trial | status | " + " | ".join(keys) + " | val acc % | epoch | test acc % (reference, not used) |",
              "|---|---|" + "---|" * len(keys) + "---:|---|---:|"]
    for r in sorted(result["trials"], key=lambda r: -(r["val_acc"] if r["val_acc"] is not None else -1)):
        mark = " ★" if best is not None and r["trial"] == best["trial"] else ""
        cells = [f"`{r['trial']}`{mark}", r["status"] + (f": {r['error']}" if r.get("error") else "")]
        cells += [_value(r["settings"].get(k, "")) for k in keys]
        cells += [_pct(r["val_acc"]), str(r["val_epoch"] or "–"), _pct(r["test_acc"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def tune_plot(result: dict, path: Path) -> Path:
    """Validation accuracy per reported epoch of every trial (left) and each trial's objective (right)."""
    from noisyft.figures import plt, save_png

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    best = (result["best"] or {}).get("trial")
    for r in result["trials"]:
        recs = [x for x in _logged(Path(r["run_dir"])) if OBJECTIVE in x]
        curves.plot(range(1, len(recs) + 1), [100 * x[OBJECTIVE] for x in recs], lw=2.5 if r["trial"] == best else 1,
                    label=r["trial"] if r["trial"] == best else None)
    curves.set(xlabel="reported epoch (linear probe, then fine-tuning)", ylabel="val acc % (noisy split)",
               title="validation accuracy per epoch")
    if best:
        curves.legend(loc="lower right", fontsize=8)
    rows = sorted([r for r in result["trials"] if r["val_acc"] is not None], key=lambda r: r["val_acc"])
    bars.barh(range(len(rows)), [100 * r["val_acc"] for r in rows],
              color=["tab:orange" if r["trial"] == best else "tab:blue" for r in rows])
    bars.set_yticks(range(len(rows)), [", ".join(f"{k}={_value(v)}" for k, v in r["settings"].items()) for r in rows],
                    fontsize=7)
    bars.set(xlabel="val acc % at the selected epoch", title="trials (best in orange)")
    return save_png(fig, path)


def write_tune_results(out: Path, result: dict, plots: bool = True) -> None:
    """``tune.json``, ``tune.md`` and (``plots``) ``tune.png`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        result["plot"] = str(tune_plot(result, out / "tune.png"))
    write_json(out / "tune.json", result)
    write_text(out / "tune.md", tune_markdown(result))
