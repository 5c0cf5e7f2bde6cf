"""Issue 13's comparison in one lent GPU call: consensus variants chosen on noisy validation, then seeds.

One call of a few minutes has to (1) choose among a few ``consensus`` variants, (2) run the chosen one's
other seeds and (3) fill the other methods' missing seeds, many cells at a time. The choice is made inside
the run, by rule, on **noisy-validation accuracy only** (mean over the grid's noise settings at seed 0), so
no test number can steer it:

1. a side-by-side timing pair on the otherwise idle machine: CE-FFT, then the control variant, one
   setting, one process each (the wall-time ratio issue 13 asks for; also warms the feature cache);
2. every variant at seed 0 on every noise setting, ``--procs`` cells at a time (one ``noisyft bench``
   process per cell, one-cell grids), the grid's other unfinished cells filling idle slots;
3. once every variant cell has finished: the winner's seeds 1..n first, then the rest, until ``--seconds``.

The winner's seed-0 cells are copied into the bench directory, which is then tabulated as usual
(``noisyft bench --collect-only``); ``$OUT`` (or ``--keep``) gets the tables, the variants' noisy-validation
table and a tarball of the cells' summaries. Usage (repository root, on the lent machine)::

    python benchmarks/gpu_grid.py --grid benchmarks/grids/cifar10_96px_gpu.yaml \
        --variants benchmarks/grids/consensus_variants.yaml --out runs/bench-cifar10-96px-gpu --procs 8 --seconds 520
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import yaml

from noisyft.bench.grid import BenchSpec, cell_dir, cell_finished
from noisyft.run.summary import delivered_block


def one_cell_grid(base: dict, noise: str, method: str, seed: int, extra: dict | None, **common) -> dict:
    """``base`` cut down to one cell (its per-method restrictions dropped; ``extra`` for the method)."""
    d = {k: v for k, v in copy.deepcopy(base).items() if k != "per_method"}
    d.update(noises=[noise], methods=[method], seeds=[seed], **common)
    if extra:
        d["per_method"] = {method: {"extra": extra}}
    return d


def consensus_cell(base: dict, noise: str, seed: int, extra: dict, **common):
    """(one-cell grid, its Cell) of ``consensus`` with ``extra`` at ``noise`` / ``seed``."""
    grid = one_cell_grid(base, noise, "consensus", seed, extra, **common)
    return grid, BenchSpec.from_dict(copy.deepcopy(grid)).cells()[0]


def tee_log(path: Path):
    """A function printing a line and appending it to ``path`` (flushed: a killed call keeps its log)."""
    f = open(path, "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        f.write(msg + "\n")
        f.flush()

    return log


def usable_cores() -> int:
    """The cores this process may run on (a lent H200 reported 16 in ``os.cpu_count()`` but allowed 2)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def val_acc(summary: dict) -> float | None:
    """Noisy-validation accuracy of the delivered phase's validation-selected epoch."""
    return (delivered_block(summary) or {}).get("val_selected_val_acc")


class Scheduler:
    """A priority list of one-cell bench runs served by ``procs`` threads, each running one subprocess."""

    def __init__(self, procs: int, deadline: float, tmp: Path, log):
        self.queue: list[tuple[str, dict, Path]] = []
        self.lock, self.procs, self.deadline, self.tmp, self.log = threading.Lock(), procs, deadline, tmp, log
        self.pending_stage1: set[str] = set()
        self.on_stage1_done = None
        self.n = 0

    def push(self, items, front=False):
        with self.lock:
            self.queue = list(items) + self.queue if front else self.queue + list(items)

    def run_one(self, name: str, grid: dict, out: Path) -> bool:
        """Run one cell's bench process (killed at the deadline); True when it exited cleanly."""
        left = self.deadline - time.time()
        if left < 20:
            return False
        with self.lock:
            self.n += 1
            cfg = self.tmp / f"cell{self.n}.yaml"
        cfg.write_text(yaml.safe_dump(grid))
        t = time.time()
        try:
            r = subprocess.run([sys.executable, "-m", "noisyft.cli", "bench", "--config", str(cfg), "--out", str(out),
                                "--no-plots"], capture_output=True, text=True, timeout=left)
            failed = ": failed" in r.stdout
            status = "ok" if r.returncode == 0 and not failed else f"rc={r.returncode} {(r.stderr or r.stdout)[-600:]}"
        except subprocess.TimeoutExpired:
            status = "deadline"
        self.log(f"{time.strftime('%H:%M:%S')} {name}: {status} in {time.time() - t:.0f}s")
        return status == "ok"

    def worker(self) -> None:
        while time.time() < self.deadline - 20:
            with self.lock:
                item = self.queue.pop(0) if self.queue else None
            if item is None:
                with self.lock:
                    waiting = bool(self.pending_stage1)
                if not waiting:
                    return
                time.sleep(2)
                continue
            name, grid, out = item
            self.run_one(name, grid, out)
            with self.lock:
                last = self.pending_stage1 == {name}
            if last and self.on_stage1_done:  # chosen before the last stage-1 name leaves: no worker quits meanwhile
                self.on_stage1_done()
            with self.lock:
                self.pending_stage1.discard(name)

    def run(self) -> None:
        threads = [threading.Thread(target=self.worker) for _ in range(self.procs)]
        for th in threads:
            th.start()
            if self.queue:  # staggered starts for the cells' processes; nothing to stagger without cells
                time.sleep(1)
        for th in threads:
            th.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--variants", required=True, help="YAML: variant name → consensus --extra mapping (first = control)")
    ap.add_argument("--out", required=True, help="the bench directory (finished cells in it are kept)")
    ap.add_argument("--procs", type=int, default=max(2, usable_cores() // 2),
                    help="cells at a time (each decodes on the CPU: a lent H200 showed 2 cores, not the 16 it is sold with)")
    ap.add_argument("--seconds", type=float, default=520)
    ap.add_argument("--num-workers", type=int, default=2, help="decoding workers per cell")
    ap.add_argument("--rerun", nargs="*", default=["consensus", "consensus-detect"],
                    help="methods whose finished cells are removed first (their code changed)")
    ap.add_argument("--timing", default="sym:0.2", help="noise setting of the side-by-side timing pair ('' to skip)")
    ap.add_argument("--keep", default=os.environ.get("OUT", "gpu-grid-out"), help="where the results go")
    a = ap.parse_args()
    start = time.time()
    deadline = start + a.seconds
    base = yaml.safe_load(Path(a.grid).read_text())
    variants = yaml.safe_load(Path(a.variants).read_text())
    out, keep, tmp = Path(a.out), Path(a.keep), Path("/tmp/gpu-grid")
    keep.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    log = tee_log(keep / "cells.log")
    spec = BenchSpec.from_dict(copy.deepcopy(base), a.grid)
    for cell in spec.cells():
        if cell.method in a.rerun and cell_dir(out, cell).exists():
            shutil.rmtree(cell_dir(out, cell))
    common = {"num_workers": a.num_workers}
    names = list(variants)
    vdir = {v: out.parent / f"{out.name}-variants" / v for v in names}
    sched = Scheduler(a.procs, deadline, tmp, log)

    if a.timing:  # alone on the machine: CE-FFT then the control variant, one process each
        for m, extra in (("ce-fft", None), ("consensus", variants[names[0]])):
            if not sched.run_one(f"timing {m}", one_cell_grid(base, a.timing, m, 0, extra, num_workers=8),
                                 out.parent / f"{out.name}-timing"):
                sys.exit("a timing cell failed: stopping before the grid spends the machine's time (cells.log)")

    stage1 = []
    for noise in spec.noises:
        for v in names:
            grid, cell = consensus_cell(base, noise, 0, variants[v], **common)
            if not cell_finished(cell_dir(vdir[v], cell)):
                stage1.append((f"{v}|{noise}", grid, vdir[v]))
    sched.pending_stage1 = {n for n, _, _ in stage1}
    rest = [c for c in spec.cells() if c.method != "consensus" and not cell_finished(cell_dir(out, c))]
    rest.sort(key=lambda c: (c.method != "consensus-detect", c.seed))
    sched.push(stage1)
    sched.push([(f"{c.method}|{c.noise}|s{c.seed}", one_cell_grid(base, c.noise, c.method, c.seed, None, **common), out)
                for c in rest])
    chosen: dict = {}

    def choose() -> None:
        table = {}
        for v in names:
            accs = {}
            for noise in spec.noises:
                f = cell_dir(vdir[v], consensus_cell(base, noise, 0, variants[v])[1]) / "summary.json"
                if f.exists():
                    accs[str(noise)] = val_acc(json.loads(f.read_text()))
            table[v] = accs
        complete = [v for v in names if len(table[v]) == len(spec.noises) and None not in table[v].values()]
        mean = {v: sum(t.values()) / max(1, len(t)) for v, t in table.items() if None not in t.values()}
        winner = max(complete or names[:1], key=lambda v: mean.get(v, -1.0))
        chosen.update(winner=winner, table=table, extra=variants[winner])
        (keep / "variants_val.json").write_text(json.dumps(chosen, indent=1))
        log(f"chosen on noisy validation: {winner} {variants[winner]} " + " ".join(f"{v}={m:.4f}" for v, m in mean.items()))
        for noise in spec.noises:  # its seed-0 cells are the grid's consensus seed 0
            cell = consensus_cell(base, noise, 0, variants[winner])[1]
            src = cell_dir(vdir[winner], cell)
            if src.exists() and not cell_dir(out, cell).exists():
                shutil.copytree(src, cell_dir(out, cell))
        seeds = [s for s in spec.seeds if s != 0]
        sched.push([(f"consensus|{n}|s{s}", one_cell_grid(base, n, "consensus", s, variants[winner], **common), out)
                    for s in seeds for n in spec.noises], front=True)

    sched.on_stage1_done = choose
    sched.run()
    if not chosen:
        choose()
    final = copy.deepcopy(base)
    final.setdefault("per_method", {}).setdefault("consensus", {})["extra"] = chosen["extra"]
    (keep / "grid_final.yaml").write_text(yaml.safe_dump(final))
    subprocess.run([sys.executable, "-m", "noisyft.cli", "bench", "--config", str(keep / "grid_final.yaml"), "--out",
                    str(out), "--collect-only", "--no-plots"], capture_output=True)
    for f in ("results.md", "results.json"):
        if (out / f).exists():
            shutil.copy(out / f, keep / f)
    with tarfile.open(keep / "cells.tar.gz", "w:gz") as tar:
        for root in [out, *vdir.values(), out.parent / f"{out.name}-timing"]:
            for f in sorted(root.glob("cells/*/*")) if root.exists() else []:
                if f.name in ("summary.json", "metrics.jsonl", "config.json", "error.txt"):
                    tar.add(f, arcname=str(f))
    log(f"finished in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
