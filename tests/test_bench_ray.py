"""bench --executor ray: the cells as Ray tasks give the local executor's table; a failed cell is retried, then reported."""
import json

import pytest
import yaml

from noisyft.bench.grid import BenchSpec
from noisyft.bench.runner import run_bench
from noisyft.cli import main

COMMON = dict(pretrained=False, image_size=32, epochs_lp=3, batch_size=16, num_workers=0, lp_optim="adamw:1e-2:1e-5")
TIMES = ("time_total", "time_train", "timings")  # wall-clock columns: the only ones allowed to differ


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("bench-ray") / "imgs", 12, 4)


def _spec(data, methods=("ce-lp", "small-loss-lp")) -> BenchSpec:
    return BenchSpec.from_dict({"data": str(data), "noises": ["symflip:0.3"], "backbones": ["test_efficientnet"],
                                "methods": list(methods), "seeds": [0], **COMMON})


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if not k.startswith(TIMES)}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_ray_executor_gives_the_local_executor_s_table(local_ray, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_data.parent)  # relative paths in the grid: tasks work in the driver's directory
    spec = _spec("imgs")
    local = run_bench(spec, tmp_path / "local", plots=False, echo=lambda s: None)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(spec.to_dict()))
    assert main(["bench", "--config", str(grid), "--out", str(tmp_path / "ray"), "--no-plots", "--executor", "ray",
                 "--cpus-per-cell", "2", "--max-retries", "0"]) == 0
    assert capsys.readouterr().out.count(": ran (") == 2
    assert local["counts"]["done"] == 2
    saved = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("local", "ray")}
    assert [c["cell"] for c in saved["ray"]["cells"]] == [c["cell"] for c in saved["local"]["cells"]]
    assert _without_times(saved["ray"]) == _without_times(saved["local"])  # same cells, same numbers (seeds fixed)
    for c in saved["ray"]["cells"]:  # the runs' identities are the local executor's (relative data path kept)
        assert json.loads((tmp_path / "ray" / "cells" / c["cell"] / "config.json").read_text())["config"]["data"] == "imgs"
    md = {name: (tmp_path / name / "results.md").read_text() for name in ("local", "ray")}
    assert md["ray"].splitlines()[0] == md["local"].splitlines()[0] and "small-loss-lp" in md["ray"]

    again: list[str] = []  # finished cells: no task at all
    run_bench(spec, tmp_path / "ray", plots=False, echo=again.append, executor="ray")
    assert again == ["[1/2] " + saved["ray"]["cells"][0]["cell"] + ": done",
                     "[2/2] " + saved["ray"]["cells"][1]["cell"] + ": done"]


def test_a_failing_cell_is_retried_then_reported(local_ray, tiny_data, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def flaky_fit(cfg):  # shipped to the workers by value: ce-lp fails once, small-loss-lp always
        import os
        import time

        from noisyft.api import fit

        (attempts / f"{cfg.method}-{os.getpid()}-{time.monotonic_ns()}").touch()
        if cfg.method == "small-loss-lp" or len(list(attempts.glob(f"{cfg.method}-*"))) == 1:
            raise RuntimeError(f"injected failure of {cfg.method}")
        return fit(cfg)

    lines: list[str] = []
    res = run_bench(_spec(tiny_data), tmp_path / "b", fit=flaky_fit, plots=False, echo=lines.append, executor="ray",
                    ray_options={"cpus_per_cell": 2, "max_retries": 2})
    tries = sorted(p.name.rsplit("-", 2)[0] for p in attempts.iterdir())
    assert tries.count("ce-lp") == 2 and tries.count("small-loss-lp") == 3  # 1 + max_retries for the hopeless one
    status = {c["method"]: c["status"] for c in res["cells"]}
    assert status == {"ce-lp": "done", "small-loss-lp": "failed"}
    failed = next(c for c in res["cells"] if c["status"] == "failed")
    assert failed["error"] == "RuntimeError: injected failure of small-loss-lp"
    assert any("failed after 3 attempt(s)" in line for line in lines)
    assert "failed" in (tmp_path / "b" / "results.md").read_text()


def test_a_cell_that_failed_before_its_run_began_runs_on_the_next_bench(tiny_data, tmp_path):
    """The local executor's retry is the next bench run: the error.txt the failure left must not block it (it
    did: a folder holding only error.txt is not a run, and fit refused it)."""
    spec = _spec(tiny_data, methods=("ce-lp",))

    def broken(cfg):
        raise RuntimeError("before the run directory exists")

    first = run_bench(spec, tmp_path, fit=broken, plots=False, echo=lambda s: None)
    assert first["cells"][0]["status"] == "failed"
    again = run_bench(spec, tmp_path, plots=False, echo=lambda s: None)
    assert again["cells"][0]["status"] == "done"
    assert not (tmp_path / "cells" / again["cells"][0]["cell"] / "error.txt").exists()
