"""A run SIGKILLed mid-extraction, mid-linear-probing or mid-fine-tuning resumes to the same outputs as an uninterrupted run."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from safetensors.torch import load_file

ARGS = ["--method", "turn", "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "5",
        "--epochs-fft", "2", "--batch-size", "16", "--num-workers", "0", "--no-progress", "--noise", "sym:0.4",
        "--seed", "7"]


def _fit(data, out, cache, kill_at=None):
    env = {**os.environ, "NOISYFT_CACHE": str(cache), "NOISYFT_SHARD_ROWS": "40", "HF_HUB_OFFLINE": "1"}
    if kill_at:
        env["NOISYFT_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "noisyft", "fit", "--data", str(data), "--out", str(out), *ARGS],
                          env=env, capture_output=True, text=True, timeout=300)


def _outputs(run):
    metrics = [{k: v for k, v in json.loads(l).items()} for l in (run / "metrics.jsonl").read_text().splitlines()]
    selection = (run / "selection.jsonl").read_text()
    issues = pd.read_csv(run / "label_issues.csv")
    weights = load_file(str(run / "model.safetensors"))
    return metrics, selection, issues, weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import write_tree

    base = tmp_path_factory.mktemp("resume")
    data = base / "imgs"
    write_tree(data, 40, seed=0, split="train")
    write_tree(data, 10, seed=1, split="test")
    r = _fit(data, base / "ref", base / "cache-ref")
    assert r.returncode == 0, r.stderr
    return data, base, _outputs(base / "ref")


@pytest.mark.parametrize("kill_at", ["extract:1", "lp:3", "train:2:3"])
def test_killed_run_resumes_bit_identical(reference, kill_at):
    data, base, ref = reference
    out, cache = base / f"run-{kill_at.replace(':', '-')}", base / f"cache-{kill_at.replace(':', '-')}"
    killed = _fit(data, out, cache, kill_at=kill_at)
    assert killed.returncode == -9  # really SIGKILLed
    assert not (out / "summary.json").exists()
    if kill_at.startswith("extract"):
        assert not any(cache.rglob("features.npy")) and any(cache.rglob("part-00001.npy"))
    elif kill_at.startswith("lp"):  # epoch 3 was logged, its checkpoint not written: resume redoes it only
        assert json.loads((out / "progress.json").read_text()) == {"tag": "lp", "epoch": 2}
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    else:
        assert json.loads((out / "progress.json").read_text()) == {"tag": "fft", "epoch": 1}
    killed_time = json.loads((out / "timings.json").read_text())
    resumed = _fit(data, out, cache)
    assert resumed.returncode == 0, resumed.stderr
    if not kill_at.startswith("extract"):
        assert f"resuming {out} from {kill_at.split(':')[0].replace('train', 'fft')} epoch" in resumed.stderr
    timings = json.loads((out / "timings.json").read_text())
    assert all(timings[k] >= v for k, v in killed_time.items())  # the killed attempt's time is kept
    metrics, selection, issues, weights = _outputs(out)
    ref_metrics, ref_selection, ref_issues, ref_weights = ref
    assert metrics == ref_metrics
    assert selection == ref_selection
    pd.testing.assert_frame_equal(issues, ref_issues)
    assert weights.keys() == ref_weights.keys()
    assert all((weights[k] == ref_weights[k]).all() for k in weights)
