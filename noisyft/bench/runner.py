"""``run_bench``: run a grid's unfinished, unclaimed cells, then write its results and plots."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from noisyft.atomic import write_json
from noisyft.bench.grid import BenchSpec, run_cell
from noisyft.bench.results import collect, write_results


def run_bench(spec: BenchSpec, bench_dir: str | Path, *, fit: Optional[Callable] = None, plots: bool = True,
              echo: Callable[[str], None] = print, run: bool = True) -> dict:
    """Run every unfinished, unclaimed cell of ``spec`` into ``bench_dir``; write and return the results.

    ``run=False`` only collects: the tables show what has finished so far (the rest as pending).
    """
    if fit is None:
        from noisyft.api import fit  # here: a test passes its own fit and skips loading every method
    bench_dir = Path(bench_dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    write_json(bench_dir / "bench.json", spec.to_dict())
    cells = spec.cells() if run else []
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
