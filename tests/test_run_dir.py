"""The run directory's safety: a user's folder is never written, one run per folder at a time, a failed
start does not block the corrected command, and a run folder's files are data, never permissions."""
import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from noisyft import api
from noisyft.cli import main
from noisyft.errors import UserError
from noisyft.run.rundir import RunDir
from noisyft.runlock import RunLock

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "2",
        "--epochs-fft", "1", "--batch-size", "16", "--num-workers", "0", "--no-progress"]


def _snapshot(root):
    """Every file under ``root`` with its bytes (to assert a folder is byte-identical afterwards)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [l for l in err if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


# ---------------------------------------------------------------- 1. a user's folder is never written


def test_fit_into_a_foreign_non_empty_folder_is_refused_and_left_byte_identical(image_tree, tmp_path, capsys):
    out = tmp_path / "results"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"my old experiment")
    (out / "labels.csv").write_text("path,label\ntrain/red/000.png,red\n")
    (out / "metrics.csv").write_text("mine\n")
    before = _snapshot(out)
    # even the user's own label file inside it, passed as --labels, stays untouched
    assert main(["fit", "--data", str(image_tree), "--labels", str(out / "labels.csv"), "--out", str(out), *TINY]) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "not a noisyft run" in line
    assert "labels.csv" in line and "tensorboard/" in line
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["labels.csv", "metrics.csv", "tensorboard"]


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["fit", "--data", str(tmp_path), "--out", str(f), *TINY]) == 2
    assert "is a file" in _one_error_line(capsys) and f.read_text() == "keep me"


def test_an_empty_existing_folder_becomes_a_run(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run = RunDir(out, {"a": 1}, {"a": 1})
    run.release()
    assert (out / ".noisyft-run").is_file() and json.loads((out / "config.json").read_text())["identity"] == {"a": 1}
    RunDir(out, {"a": 1}, {"a": 1}).release()  # and is recognised as one afterwards


def test_a_run_made_before_the_marker_is_still_recognised(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"identity": {"a": 1}, "config": {"a": 1}}))
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    RunDir(out, {"a": 1}, {"a": 1}).release()
    assert (out / ".noisyft-run").exists()


# ---------------------------------------------------------------- 6. one process per run directory


def test_second_process_on_a_locked_run_is_refused_naming_the_holder(image_tree, tmp_path, capsys):
    out = tmp_path / "r"
    RunDir(out, {"a": 1}, {"a": 1}).release()
    with RunLock(out):  # another "fit" holds it (flock conflicts across open files, in one process too)
        before = _snapshot(out)
        assert main(["fit", "--data", str(image_tree), "--out", str(out), *TINY]) == 2
        line = _one_error_line(capsys)
        assert "in use by another noisyft process" in line and f"pid {os.getpid()}" in line and "since" in line
        assert _snapshot(out) == before  # nothing written: not even its config
    RunDir(out, {"a": 1}, {"a": 1}).release()  # released: usable again


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    code = ("import os, signal, sys; from noisyft.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -9
    assert RunLock(out).holder()["pid"] not in (None, os.getpid())  # the dead process's record is still there
    lock = RunLock(out)
    lock.acquire()  # the kernel released the dead holder's flock: no stale lock to clean up
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


# ---------------------------------------------------------------- 9. a failed start does not block the fix


def _small_tree(tmp_path):
    from tests.conftest import write_tree

    write_tree(tmp_path / "imgs", 10)
    return tmp_path / "imgs"


def test_failed_start_is_restartable_with_a_corrected_config(tmp_path, capsys, caplog):
    out, data = tmp_path / "r", _small_tree(tmp_path)
    (data / "red" / "005.png").write_bytes(b"not a png")
    args = ["fit", "--data", str(data), "--out", str(out), *TINY, "--test-fraction", "0.2", "--epochs-fft", "0"]
    assert main(args) == 2
    assert "red/005.png" in _one_error_line(capsys)
    assert (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    # the corrected command: same --out, another config (skip the bad image)
    assert main([*args, "--skip-bad-images"]) == 0
    assert "never started training" in caplog.text
    assert json.loads((out / "config.json").read_text())["config"]["skip_bad_images"] is True
    assert json.loads((out / "state.json").read_text())["finished"] == ["done"]
    # a run that did work is still protected
    with pytest.raises(UserError, match="another config"):
        api.fit(data=str(data), out=str(out), skip_bad_images=True, seed=5, backbone="test_efficientnet",
                pretrained=False, image_size=32, epochs_lp=2, epochs_fft=0, batch_size=16, num_workers=0, progress=False)


def test_mistyped_backbone_then_corrected(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["fit", "--data", str(_small_tree(tmp_path)), "--out", str(out), *TINY, "--epochs-fft", "0",
            "--test-fraction", "0"]
    assert main([*args, "--backbone", "test_efficientnett"]) == 2
    assert "unknown backbone" in _one_error_line(capsys)
    assert main(args) == 0  # the corrected command, same --out
    assert json.loads((out / "config.json").read_text())["identity"]["backbone"] == "test_efficientnet"


# ---------------------------------------------------------------- damaged run files: one line


def test_damaged_run_files_are_one_line(tmp_path):
    out = tmp_path / "r"
    run = RunDir(out, {"a": 1}, {"a": 1})
    run.save_checkpoint("fft", 1, {"w": {"x": np.zeros(3)}})
    run.release()
    ck = out / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])  # truncated (a bad copy of the folder)
    run = RunDir(out, {"a": 1}, {"a": 1})
    with pytest.raises(UserError, match="checkpoint.pt is unreadable.*delete") as e:
        run.load_checkpoint()
    run.release()
    assert "\n" not in str(e.value)
    for name, text in (("state.json", '{"finished": ['), ("config.json", "\x00\x01garbage")):
        (out / name).write_text(text)
        with pytest.raises(UserError, match=name) as e:
            RunDir(out, {"a": 1}, {"a": 1})
        assert "\n" not in str(e.value)
        (out / name).unlink()
    RunDir(out, {"a": 1}, {"a": 1}).release()  # and the lock was released on each failure


# ---------------------------------------------------------------- 2. files are data, never permissions


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cifar_dir(root, evil_marker=None):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3],
                 b"batch_label": b"x", b"filenames": [b"a.png"] * 4}
        if evil_marker and name == "data_batch_2":
            batch[b"labels"] = _Evil(evil_marker)
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def test_malicious_cifar_pickle_is_refused_and_not_executed(tmp_path):
    from noisyft.data import load_data

    marker = tmp_path / "pwned"
    d = _cifar_dir(tmp_path, marker)
    before = _snapshot(d)
    with pytest.raises(UserError) as e:
        load_data(f"cifar10:{d}", test_fraction=0.0)
    msg = str(e.value)
    assert "\n" not in msg and "data_batch_2" in msg and str(d) in msg and "posix.system" in msg
    assert not marker.exists() and _snapshot(d) == before


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_cifar_batches_still_load_under_every_protocol(tmp_path, protocol):
    from noisyft.data.safe_pickle import load_data_pickle

    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"name": "x",
             b"f": np.float32(1.5)}
    blob = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:  # what numpy 1.x wrote (the official files name numpy.core)
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    got = load_data_pickle(blob)
    assert got[b"labels"] == [1, 2] and np.array_equal(got[b"data"], batch[b"data"]) and got[b"f"] == 1.5


def test_resume_of_a_run_naming_a_malicious_cifar_file_executes_nothing(tmp_path):
    from noisyft.config import FitConfig

    marker = tmp_path / "pwned"
    d = _cifar_dir(tmp_path, marker)
    cfg = FitConfig(data=f"cifar10:{d}", backbone="test_efficientnet", pretrained=False, out=str(tmp_path / "run"))
    RunDir(cfg.run_dir(), cfg.identity(), dataclasses.asdict(cfg)).release()
    with pytest.raises(UserError, match="refusing to read CIFAR-10 file data_batch_2"):
        api.resume(tmp_path / "run")
    assert not marker.exists()


def test_resume_does_not_take_remote_code_permission_from_the_run_folder(tmp_path, capsys):
    from noisyft.config import FitConfig

    cfg = FitConfig(data="demo", backbone="hf:/somewhere/custom-model", allow_remote_code=True, out=str(tmp_path / "run"))
    RunDir(cfg.run_dir(), cfg.identity(), dataclasses.asdict(cfg)).release()
    before = _snapshot(tmp_path / "run")
    assert main(["fit", "--resume", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert "--allow-remote-code" in line and "hf:/somewhere/custom-model" in line
    assert _snapshot(tmp_path / "run") == before


def _remote_code_model_dir(root, marker):
    """A Hugging Face model directory whose config class is Python code that, when run, creates ``marker``."""
    d = root / "custom-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                                                  "AutoModel": "evil.EvilModel"}}))
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                               "from transformers import PretrainedConfig\n"
                               "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    return d


def test_predict_and_report_do_not_take_remote_code_permission_from_the_weights(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    marker = tmp_path / "pwned"
    model_dir = _remote_code_model_dir(tmp_path, marker)
    run = tmp_path / "run"
    run.mkdir()
    meta = {"backbone": f"hf:{model_dir}", "image_size": 32, "classes": ["a", "b"], "allow_remote_code": True}
    save_file({"head.weight": torch.zeros(2, 2)}, str(run / "model.safetensors"),
              metadata={k: json.dumps(v) for k, v in meta.items()})
    with pytest.raises(UserError, match="--allow-remote-code"):
        api.load_model(run)
    assert main(["predict", "--run", str(run), "--data", str(tmp_path)]) == 2
    assert "--allow-remote-code" in _one_error_line(capsys)
    assert not marker.exists()
    # positive control: the same model directory does run its code when the user grants it on the command line
    code = "import sys; from noisyft import api; api.load_model(sys.argv[1], allow_remote_code=True)"
    subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": os.getcwd(), "HF_MODULES_CACHE": str(tmp_path / "hfmod")})
    assert marker.exists()


# ---------------------------------------------------------------- 11. linear probing resumes (loss state too)


@pytest.mark.parametrize("method", ["elr-lp", "cleanlab"])
def test_linear_probe_resumes_from_its_last_epoch(tmp_path, monkeypatch, method):
    """A resumed LP matches an uninterrupted run: ELR's per-sample targets are restored, cleanlab's selection
    record is not logged twice."""
    import torch
    from safetensors.torch import load_file

    from tests.conftest import write_tree

    write_tree(tmp_path / "imgs", 12)
    kw = dict(data=str(tmp_path / "imgs"), method=method, noise="sym:0.4", backbone="test_efficientnet",
              pretrained=False, image_size=32, epochs_lp=4, batch_size=8, num_workers=0, progress=False, seed=3,
              test_fraction=0.25, extra={"folds": 2} if method == "cleanlab" else {})
    ref = api.fit(out=str(tmp_path / "ref"), **kw)
    from noisyft.methods.base import Context

    class Killed(Exception):
        pass

    save = Context.checkpoint

    def checkpoint_then_die(ctx, tag, epoch, **objects):  # the process "dies" right after LP epoch 2's checkpoint
        save(ctx, tag, epoch, **objects)
        if (tag, epoch) == ("lp", 2):
            raise Killed

    monkeypatch.setattr(Context, "checkpoint", checkpoint_then_die)
    with pytest.raises(Killed):
        api.fit(out=str(tmp_path / "run"), **kw)
    monkeypatch.setattr(Context, "checkpoint", save)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (ck["tag"], ck["epoch"]) == ("lp", 2)
    if method == "elr-lp":
        assert ck["states"]["loss"]["target"].abs().sum() > 0
    res = api.fit(out=str(tmp_path / "run"), **kw)
    for log in ("metrics.jsonl", "selection.jsonl"):
        ref_log, got = tmp_path / "ref" / log, tmp_path / "run" / log
        assert (got.read_text() if got.exists() else None) == (ref_log.read_text() if ref_log.exists() else None)
    assert res.label_issues.equals(ref.label_issues)
    a, b = load_file(str(tmp_path / "run" / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
