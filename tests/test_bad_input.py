"""Bad input through the whole pipeline: one-line errors that name the culprit, nothing finished lost."""
import json
import os
import subprocess
import sys

import pytest

from noisyft.cli import main

TINY = ["--method", "turn", "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "3",
        "--epochs-fft", "2", "--batch-size", "16", "--num-workers", "0", "--no-progress"]


def _run_cli(argv, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "noisyft", *argv], env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(proc, code=2) -> str:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len([l for l in err if l.startswith("error:")]) == 1 and "Traceback" not in proc.stderr
    return [l for l in err if l.startswith("error:")][0]


def test_corrupt_image_in_worker_is_one_line_naming_the_file(image_tree, tmp_path):
    bad = image_tree / "train" / "red" / "005.png"
    bad.write_bytes(b"not a png at all")
    proc = _run_cli(["fit", "--data", str(image_tree), "--out", str(tmp_path / "r"), *TINY[:-3], "--num-workers", "2", "--no-progress"])
    line = _one_line_error(proc)
    assert "red/005.png" in line and "cannot read image" in line


def test_corrupt_image_skipped_on_request_and_listed(image_tree, tmp_path):
    (image_tree / "train" / "red" / "005.png").write_bytes(b"garbage")
    assert main(["fit", "--data", str(image_tree), "--out", str(tmp_path / "r"), "--skip-bad-images", *TINY]) == 0
    info = json.loads((tmp_path / "r" / "data.json").read_text())
    assert any("red/005.png" in s for s in info["skipped_images"])


@pytest.mark.parametrize("where, tag", [("fine-tuning", "fft"), ("linear probing", "lp")])
def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(image_tree, tmp_path, where, tag):
    """Per-step checks (fine-tuning) and the once-per-epoch check of the feature-space loops (linear probing) alike."""
    out = tmp_path / "r"
    proc = _run_cli(["fit", "--data", str(image_tree), "--out", str(out), *TINY], {"NOISYFT_KILL_AT": f"nan:{where}:2:1"})
    line = _one_line_error(proc, code=1)
    assert where in line and "epoch 2" in line and "step 1" in line and "nan" in line
    assert json.loads((out / "progress.json").read_text()) == {"tag": tag, "epoch": 1}
    # the run continues from that checkpoint once the cause is gone
    proc = _run_cli(["fit", "--data", str(image_tree), "--out", str(out), *TINY])
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stderr and (out / "label_issues.csv").exists()


def test_class_with_a_single_training_sample_is_kept_and_logged(tmp_path, caplog):
    from tests.conftest import write_tree

    root = tmp_path / "imgs"
    write_tree(root, 20)
    for f in sorted((root / "blue").iterdir())[1:]:
        f.unlink()
    assert main(["fit", "--data", str(root), "--test-fraction", "0", "--out", str(tmp_path / "r"), *TINY]) == 0
    sel = [json.loads(l) for l in (tmp_path / "r" / "selection.jsonl").read_text().splitlines()]
    assert all(s["n_min"] == 1 and s["selected"] == 3 for s in sel)
    assert "blue" in caplog.text and "kept as clean" in caplog.text


def test_unknown_dataset_name_suggests(capsys):
    assert main(["fit", "--data", "cifar11"]) == 2
    err = capsys.readouterr().err
    assert "cifar11" in err and "cifar10" in err


def test_labels_and_noise_together_is_refused(image_tree, tmp_path, capsys):
    csv = tmp_path / "l.csv"
    csv.write_text("path,label\ntrain/red/000.png,red\n")
    assert main(["fit", "--data", str(image_tree), "--labels", str(csv), "--noise", "sym:0.2", "--out", str(tmp_path / "r")]) == 2
    assert "--noise and --labels" in capsys.readouterr().err


def test_predict_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_resume_flag_continues_a_killed_run_from_its_directory(image_tree, tmp_path):
    out = tmp_path / "r"
    proc = _run_cli(["fit", "--data", str(image_tree), "--out", str(out), *TINY], {"NOISYFT_KILL_AT": "train:2:0"})
    assert proc.returncode == -9
    proc = _run_cli(["fit", "--resume", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "state.json").read_text())["finished"] == ["done"]


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["fit", "--resume", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_class_without_training_samples_is_skipped(image_tree, tmp_path):
    """A CSV that never uses a folder class: the class stays in the head, is ignored by selection."""
    paths = [f"train/{c}/{i:03d}.png" for c in ("red", "green") for i in range(40)]
    csv = tmp_path / "two.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.split('/')[1]}\n" for p in paths))
    assert main(["fit", "--data", str(image_tree), "--labels", str(csv), "--out", str(tmp_path / "r"), *TINY]) == 0
    sel = [json.loads(l) for l in (tmp_path / "r" / "selection.jsonl").read_text().splitlines()]
    assert all(s["selected"] == 2 * s["n_min"] and s["n_min"] > 0 for s in sel)
    assert all(s["gmm_status"].get("empty") == 1 for s in sel)


def test_probe_epoch_checks_its_losses_once_and_names_the_first_bad_step():
    """Feature-space loops keep step losses on the device; a NaN still stops the epoch, naming its first bad step."""
    import torch
    from torch import nn

    from noisyft.engine import TrainingDiverged, generator, train_head_epoch
    from noisyft.losses import create_loss

    feats, labels = torch.randn(64, 5), torch.randint(0, 3, (64,))
    ce, seen = create_loss("ce"), []

    class Recorded(nn.Module):  # CE, remembering each step's value; NaN from the third step on when asked
        def __init__(self, nan_from=None):
            super().__init__()
            self.nan_from = nan_from

        def forward(self, logits, y, idx):
            loss = ce(logits, y, idx)
            if self.nan_from is not None and len(seen) >= self.nan_from:
                loss = loss * float("nan")
            seen.append(float(loss.detach()))
            return loss

    head = nn.Linear(5, 3)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    mean = train_head_epoch(head, feats, labels, Recorded(), opt, batch_size=16, gen=generator(0, 1), epoch=1)
    assert len(seen) == 4 and mean == pytest.approx(sum(seen) / 4)
    seen.clear()
    with pytest.raises(TrainingDiverged, match=r"linear probing: loss became nan at epoch 3, step 2"):
        train_head_epoch(head, feats, labels, Recorded(nan_from=2), opt, batch_size=16, gen=generator(0, 2), epoch=3)

