"""``bench --executor ray``: a grid's cells as Ray tasks (a local Ray, or a cluster given ``--address``).

Each task is exactly what the local executor does for a cell (:func:`noisyft.bench.grid.run_cell`: skip a
finished cell, take its lock, one ``fit``, ``error.txt`` on failure), so the results written afterwards
by the driver are the same ``results.md`` / ``results.json``. What Ray adds:

* **placement**: a task holds ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs; torch uses that many threads;
* **retries**: a cell whose fit raised is tried again (``max_retries`` times, Ray's ``retry_exceptions``),
  and so is one whose worker died (a killed process, a lost node); the last failure is reported;
* **paths**: a task works in the driver's current directory, so relative paths of the grid (data, labels,
  cache) and the cells' run identities are the local executor's. On a cluster that directory, the bench
  directory and the feature cache must be on a filesystem every node mounts at the same path.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from noisyft.atomic import write_text
from noisyft.bench.grid import BenchSpec, Cell, cell_finished, run_cell
from noisyft.errors import UserError
from noisyft.ray_session import ray_session, torch_threads


class CellFailed(RuntimeError):
    """A cell's fit raised (its traceback is in the cell's ``error.txt``); raised so Ray retries the task."""


def _cell_task(spec: BenchSpec, cell: Cell, bench_dir: str, cwd: str, fit: Optional[Callable], cpus: float) -> str:
    """Run one cell inside a Ray worker: the local executor's :func:`run_cell`, in the driver's directory."""
    import torch

    if not Path(cwd).is_dir():
        raise UserError(f"bench --executor ray: the driver's directory {cwd} is not visible on this node; "
                        f"run the bench from a filesystem every node mounts at the same path")
    os.chdir(cwd)
    torch.set_num_threads(torch_threads(cpus))
    if fit is None:
        from noisyft.api import fit
    status = run_cell(spec, cell, Path(bench_dir), fit)
    if status == "failed":
        raise CellFailed(f"cell {cell.name} failed; see {Path(bench_dir) / 'cells' / cell.name / 'error.txt'}")
    return status


def run_cells(spec: BenchSpec, cells: list[Cell], bench_dir: Path, *, fit: Optional[Callable] = None,
              address: Optional[str] = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0, max_retries: int = 2,
              echo: Callable[[str], None] = print) -> dict[str, str]:
    """Run ``cells`` as Ray tasks; return each cell's status (``done``, ``ran``, ``busy`` or ``failed``).

    Finished cells are skipped in the driver (no task is started for them). ``fit`` (default
    :func:`noisyft.api.fit`) is shipped to the workers; it must be picklable.
    """
    if cpus_per_cell <= 0 or gpus_per_cell < 0 or max_retries < 0:
        raise UserError(f"bench --executor ray: --cpus-per-cell must be > 0, --gpus-per-cell and --max-retries >= 0 "
                        f"(got {cpus_per_cell}, {gpus_per_cell}, {max_retries})")
    bench_dir = Path(bench_dir).resolve()
    statuses: dict[str, str] = {}
    todo = []
    for cell in cells:
        if cell_finished(bench_dir / "cells" / cell.name):
            statuses[cell.name] = "done"
        else:
            todo.append(cell)
    for k, name in enumerate(statuses, 1):
        echo(f"[{k}/{len(cells)}] {name}: done")
    if not todo:
        return statuses
    with ray_session(address, "bench --executor ray") as ray:
        task = ray.remote(_cell_task).options(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=max_retries,
                                              retry_exceptions=[CellFailed])
        start = time.perf_counter()
        refs = {task.remote(spec, cell, str(bench_dir), os.getcwd(), fit, cpus_per_cell): cell for cell in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            cell = refs[ready[0]]
            try:
                status = ray.get(ready[0])
            except Exception as e:  # the last attempt's failure (the fit's own, or a lost worker)
                status = "failed"
                _record_failure(bench_dir / "cells" / cell.name, e)
                echo(f"cell {cell.name}: failed after {max_retries + 1} attempt(s)")
            statuses[cell.name] = status
            echo(f"[{len(statuses)}/{len(cells)}] {cell.name}: {status} ({time.perf_counter() - start:.0f}s into the grid)")
    return statuses


def _record_failure(path: Path, error: Exception) -> None:
    """Leave ``error.txt`` for the table: the fit's own traceback is there already; a lost worker's error is not."""
    if not (path / "error.txt").exists():
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / "error.txt", f"{type(error).__name__}: {error}\n")
