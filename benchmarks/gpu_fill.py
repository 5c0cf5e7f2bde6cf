"""Fill a grid's missing seeds in one lent GPU call, then time two methods side by side on the warm machine.

A committed results file (``--have``) already holds most of a grid's cells; a lent machine's call is too short to
rerun them all. This runs only the cells of ``--methods`` that the file lacks (or whose method is in ``--rerun``:
its code changed since), in the order the methods are named, ``--procs`` one-cell ``noisyft bench`` processes at a
time (:class:`benchmarks.gpu_grid.Scheduler`). With ``--timing-seconds`` left it stops the grid, waits for every
cell process to end, and times ``noisyft fit`` of the ``--timing`` pair one after the other on the otherwise idle
machine, features already cached, alternating while time is left. It writes to ``--keep`` (``$OUT`` on the
machine): ``results.json`` / ``results.md`` of the whole grid (the new cells, plus the committed file's rows for
the cells it did not rerun), ``timing.json``, ``cells.log`` and a tarball of the new cells' summaries. Usage::

    python benchmarks/gpu_fill.py --grid benchmarks/grids/cifar10_96px_gpu.yaml \
        --have benchmarks/results/bench_cifar10_96px_gpu.json --methods consensus ce-fft turn unicon-lp \
        --rerun consensus --out runs/bench-cifar10-96px-gpu --seconds 520 --timing-seconds 110
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import method_variant, variant_slug  # noqa: E402
from benchmarks.gpu_grid import Scheduler, one_cell_grid, tee_log, usable_cores  # noqa: E402
from noisyft.bench.grid import BenchSpec, cell_dir, cell_finished  # noqa: E402
from noisyft.bench.results import cell_row, results_markdown, tabulate  # noqa: E402


def reruns(c, rerun: list[str], noises: list[str]) -> bool:
    """Whether cell ``c`` runs again although the committed file has it: its method's code changed (``rerun``), at
    the ``noises`` settings only when those are named."""
    return c.method in rerun and (not noises or c.noise in noises)


def cells_to_run(spec: BenchSpec, have: dict, methods: list[str], rerun: list[str], out: Path,
                 noises: list[str] = ()) -> list:
    """The cells of ``methods`` (at ``noises`` when named) that ``have`` lacks or that :func:`reruns`, and ``out``
    has not finished (an earlier call on the same machine), in ``methods`` order, seed-major."""
    done = {r["cell"] for r in have.get("cells", []) if r.get("status") == "done"}
    todo = [c for c in spec.cells() if c.method in methods and (not noises or c.noise in noises)
            and (reruns(c, rerun, noises) or c.name not in done) and not cell_finished(cell_dir(out, c))]
    return sorted(todo, key=lambda c: (methods.index(c.method), c.seed, spec.noises.index(c.noise)))


def merged_results(spec: BenchSpec, have: dict, out: Path, rerun: list[str], noises: list[str] = ()) -> dict:
    """The grid's results: each cell's new row where it ran here, else the committed row (not where it
    :func:`reruns`)."""
    old = {r["cell"]: r for r in have.get("cells", [])}
    rows = []
    for c in spec.cells():
        new = cell_row(c, out)
        keep_old = new["status"] != "done" and not reruns(c, rerun, noises) and old.get(c.name, {}).get("status") == "done"
        rows.append(old[c.name] if keep_old else new)
    return tabulate(spec, rows)


def fit_args(label: str) -> list[str]:
    """``noisyft fit`` arguments of a timed method, a :func:`~benchmarks.common.method_variant` label (e.g.
    ``consensus?head_batch_size=512``)."""
    name, settings = method_variant(label)
    return ["--method", name, *[a for kv in settings for a in ("--extra", kv)]]


def time_pair(base: dict, noise: str, pair: list[str], until: float, root: Path, log, extra: list[str] = (),
              first_round: float = 0.0) -> list[dict]:
    """``noisyft fit`` of each method of ``pair`` (two or more, each as :func:`fit_args` reads it) in turn, alone,
    repeated while a whole round fits before ``until``, the order reversed every other round (so no method always
    runs first on a warm machine); ``extra`` arguments come last, so they override the grid's: ``--image-size 224``
    times a larger input. A round is expected to last as long as the one before, the first ``first_round`` seconds:
    one that would end past ``until`` does not start (a round cut by the call's own limit loses what the call had
    not yet written)."""
    rounds, took = [], first_round
    while time.time() + took <= until:
        t0, rnd = time.time(), {}
        for m in (pair if len(rounds) % 2 == 0 else pair[::-1]):
            run = root / f"r{len(rounds)}-{variant_slug(m)}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "noisyft.cli", "fit", "--data", base["data"][0], "--noise", noise,
                   "--image-size", str(base["image_size"]), "--val-fraction", str(base["val_fraction"]),
                   *fit_args(m), "--out", str(run), "--no-progress", "--num-workers", "8", *extra]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, until - time.time() + 60))
            except subprocess.TimeoutExpired:
                log(f"timing {m}: past the deadline")
                return rounds
            if r.returncode:
                log(f"timing {m}: rc={r.returncode} {r.stderr[-400:]}")
                return rounds
            rnd[m] = json.loads((run / "summary.json").read_text())["timings"]
            log(f"timing round {len(rounds)} {m}: " + json.dumps({k: round(v, 1) for k, v in rnd[m].items()}))
        rounds.append(rnd)
        took = time.time() - t0
    return rounds


def keep_cells(keep: Path, results: dict, out: Path, todo: list) -> None:
    """Write the merged table and a tarball of the new cells' files to ``keep`` — before any timing round, so a call
    cut short while timing still brings its cells back."""
    (keep / "results.json").write_text(json.dumps(results, indent=1))
    (keep / "results.md").write_text(results_markdown(results))
    with tarfile.open(keep / "cells.tar.gz", "w:gz") as tar:
        for c in todo:
            for name in ("summary.json", "metrics.jsonl", "config.json", "state.json", "error.txt"):
                if (cell_dir(out, c) / name).exists():
                    tar.add(cell_dir(out, c) / name, arcname=f"{c.name}/{name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--have", required=True, help="the grid's committed results.json")
    ap.add_argument("--methods", nargs="+", required=True, help="methods whose missing cells run, in this order")
    ap.add_argument("--rerun", nargs="*", default=[], help="methods whose every cell runs again (their code changed)")
    ap.add_argument("--noises", nargs="*", default=[], help="run (and rerun) only these settings' cells, e.g. sym:0.2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--procs", type=int, default=0, help="cells at a time (0: half the usable cores, at most 8)")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=520)
    ap.add_argument("--timing-seconds", type=float, default=110,
                    help="seconds kept for the timing pair, at least one round's; 0: no timing")
    ap.add_argument("--timing", nargs="+", default=["ce-fft", "consensus"],
                    help="the methods timed side by side (two or more; name?key=value adds --extra key=value)")
    ap.add_argument("--timing-noise", default="sym:0.2")
    ap.add_argument("--timing-args", default="", help="more `noisyft fit` arguments for the timing pair, e.g. '--image-size 224'")
    ap.add_argument("--keep", default=os.environ.get("OUT", "gpu-fill-out"))
    a = ap.parse_args()
    start = time.time()
    base = yaml.safe_load(Path(a.grid).read_text())
    spec = BenchSpec.from_dict(copy.deepcopy(base), a.grid)
    have = json.loads(Path(a.have).read_text())
    out, keep = Path(a.out), Path(a.keep)
    keep.mkdir(parents=True, exist_ok=True)
    log = tee_log(keep / "cells.log")
    procs = a.procs or max(1, min(8, usable_cores() // 2))
    noises = a.noises
    if set(noises) - set(spec.noises):
        ap.error(f"--noises {' '.join(sorted(set(noises) - set(spec.noises)))}: not among the grid's {spec.noises}")
    todo = cells_to_run(spec, have, a.methods, a.rerun, out, noises)
    log(f"{len(todo)} cells to run, {procs} at a time, {usable_cores()} usable cores ({os.cpu_count()} reported)")
    tmp = Path("/tmp/gpu-fill")
    tmp.mkdir(parents=True, exist_ok=True)
    sched = Scheduler(procs, start + a.seconds - a.timing_seconds, tmp, log)
    sched.push([(f"{c.method}|{c.noise}|s{c.seed}",
                 one_cell_grid(base, c.noise, c.method, c.seed, None, num_workers=a.num_workers), out) for c in todo])
    sched.run()
    keep_cells(keep, merged_results(spec, have, out, a.rerun, noises), out, todo)
    rounds = [] if a.timing_seconds <= 0 else time_pair(
        base, a.timing_noise, a.timing, start + a.seconds, out.parent / f"{out.name}-timing", log,
        shlex.split(a.timing_args), first_round=a.timing_seconds)
    (keep / "timing.json").write_text(json.dumps({"noise": a.timing_noise, "args": a.timing_args, "rounds": rounds}, indent=1))
    ran = sum(cell_finished(cell_dir(out, c)) for c in todo)
    log(f"{ran} of {len(todo)} cells finished; {len(rounds)} timing rounds; {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
