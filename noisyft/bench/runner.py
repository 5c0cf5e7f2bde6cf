"""``run_bench``: run a grid's unfinished, unclaimed cells, then write its results and plots."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from noisyft.atomic import write_json
from noisyft.bench.grid import BenchSpec, run_cell
from noisyft.bench.results import collect, write_results
from noisyft.errors import UserError

EXECUTORS = ("local", "ray")


def run_bench(spec: BenchSpec, bench_dir: str | Path, *, fit: Optional[Callable] = None, plots: bool = True,
              echo: Callable[[str], None] = print, run: bool = True, executor: str = "local",
              ray_options: Optional[dict] = None) -> dict:
    """Run every unfinished, unclaimed cell of ``spec`` into ``bench_dir``; write and return the results.

    ``run=False`` only collects: the tables show what has finished so far (the rest as pending).
    ``executor``: ``local`` runs the cells one after another in this process; ``ray`` runs them as Ray
    tasks (:mod:`noisyft.bench.ray_exec`; ``ray_options``: address, cpus_per_cell, gpus_per_cell,
    max_retries). Both write the same results.
    """
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: choose from {', '.join(EXECUTORS)}")
    bench_dir = Path(bench_dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    write_json(bench_dir / "bench.json", spec.to_dict())
    cells = spec.cells() if run else []
    if executor == "ray" and cells:
        from noisyft.bench.ray_exec import run_cells  # here: Ray is an optional dependency

        run_cells(spec, cells, bench_dir, fit=fit, echo=echo, **(ray_options or {}))
        cells = []
    elif fit is None:
        from noisyft.api import fit  # here: a test passes its own fit and skips loading every method
    for k, cell in enumerate(cells, 1):
        t = time.perf_counter()
        status = run_cell(spec, cell, bench_dir, fit)
        extra = f" in {time.perf_counter() - t:.0f}s" if status in ("ran", "failed") else ""
        echo(f"[{k}/{len(cells)}] {cell.name}: {status}{extra}")
    results = collect(spec, bench_dir)
    write_results(bench_dir, results)
    if plots:
        from noisyft.bench.plots import write_plots  # here: matplotlib loads only when plots are drawn

        results["plots"] = [str(p) for p in write_plots(bench_dir, results)]
    return results
