"""``noisyft report``: the HTML page and its figures, the saved losses/GMMs, CSV and TensorBoard logs,
and (where Chromium is installed) that a real browser renders every image."""
import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from noisyft import api
from noisyft.cli import main
from noisyft.run.rundir import RunDir, flatten_record

TINY = dict(method="turn", backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=32, num_workers=0,
            progress=False, lp_optim="adamw:1e-2:1e-5")
FIGURES = {"noise_rate.png", "loss_histograms.png", "selection.png", "accuracy.png", "suspects.png", "tsne.png"}


@pytest.fixture(scope="module")
def turn_run(tmp_path_factory):
    """A finished TURN run with injected noise (true labels known) and a test set, plus its report."""
    from tests.conftest import write_tree

    base = tmp_path_factory.mktemp("report")
    write_tree(base / "imgs", 40, seed=0, split="train")
    write_tree(base / "imgs", 10, seed=1, split="test")
    res = api.fit(data=str(base / "imgs"), noise="symflip:0.3", out=str(base / "run"), seed=3, epochs_lp=8,
                  epochs_fft=2, cache_dir=str(base / "cache"), **TINY)
    assert main(["report", str(res.run_dir), "--num-workers", "0", "--classes-shown", "2", "--max-points", "90"]) == 0
    return res.run_dir


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory):
    """`detect`-style: user CSV labels (truth unknown), no test set, no fine-tuning, no selection."""
    from tests.conftest import write_tree

    base = tmp_path_factory.mktemp("bare")
    paths = write_tree(base / "photos", 20, seed=5)
    given = [p.split("/")[0] for p in paths]
    given[:6] = ["green"] * 6
    pd.DataFrame({"path": paths, "label": given}).to_csv(base / "noisy.csv", index=False)
    res = api.fit(data=str(base / "photos"), labels=str(base / "noisy.csv"), test_fraction=0.0, epochs_lp=3,
                  epochs_fft=0, out=str(base / "run"), cache_dir=str(base / "cache"), **TINY)
    api.report(res.run_dir, num_workers=0, max_points=50)
    return res.run_dir


def _embedded(page: str) -> dict[str, bytes]:
    """data-file name → embedded PNG bytes of every <img> on the page."""
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]*data-file="([^"]+)"', page)
    assert len(imgs) == page.count("<img"), "every image is embedded"
    return {name: base64.b64decode(data) for data, name in imgs}


def _valid_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_report_embeds_every_figure(turn_run):
    out = turn_run / "report"
    page = (out / "index.html").read_text()
    images = _embedded(page)
    assert set(images) == FIGURES
    for name, data in images.items():
        assert (out / name).read_bytes() == data, name  # the PNG beside the page is the embedded one
        w, h = _valid_png(data)
        assert w > 200 and h > 150, name
    assert "could not be produced" not in page and "could not be loaded" not in page
    for key in ("test acc (last epoch, fft:2)", "Test accuracy by phase", "linear probe", "fine-tuned", "auroc",
                "precision", "Timings", "Label-noise rate per given class", "cleanlab confident joint"):
        assert key in page
    rates = json.loads((turn_run / "summary.json").read_text())["noise_rate"]
    assert f"<td>true</td><td>{100 * rates['true']['overall']:.1f}%</td>" in page  # the card beside the chart
    assert "best test acc" not in page  # no accuracy over probe and fine-tuned epochs together


def test_report_links_per_class_histograms(turn_run):
    out = turn_run / "report"
    links = re.findall(r'href="(classes/[^"]+\.png)"', (out / "index.html").read_text())
    assert sorted(links) == ["classes/epoch1_0001-0003.png", "classes/final_0001-0003.png"]
    for link in links:
        _valid_png((out / link).read_bytes())


def test_run_saves_losses_and_gmms(turn_run):
    from noisyft.run.losses import list_stages, load_stage

    assert list_stages(turn_run) == ["epoch1", "epoch2", "final"]
    for stage in ("epoch1", "final"):
        losses, gmm = load_stage(turn_run, stage)
        assert losses.dtype == np.float32 and losses.shape == (120,) and np.isfinite(losses).all()
        assert gmm["means"].shape == (3, 2) and gmm["tau"] == 0.6 and gmm["status"] == ["fit"] * 3
        assert (gmm["means"][:, 0] <= gmm["means"][:, 1]).all()  # column 0 is the clean component
    assert json.loads((turn_run / "losses" / "final.json").read_text())["used_for_label_issues"] is True


def test_csv_logs_match_jsonl(turn_run):
    for stream in ("metrics", "selection"):
        records = [flatten_record(json.loads(l)) for l in (turn_run / f"{stream}.jsonl").read_text().splitlines()]
        pd.testing.assert_frame_equal(pd.read_csv(turn_run / f"{stream}.csv"), pd.DataFrame(records),
                                      check_dtype=False)


def _scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_every_scalar(turn_run):
    assert list((turn_run / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(turn_run / "tensorboard")
    metrics = [json.loads(l) for l in (turn_run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars["metrics/test_acc"]] == list(range(1, 11))  # 8 LP epochs, FFT continues at 9
    assert np.allclose([v for _, v in scalars["metrics/test_acc"]], [m["test_acc"] for m in metrics])
    assert [s for s, _ in scalars["metrics/n_train"]] == [9, 10]
    selection = [json.loads(l) for l in (turn_run / "selection.jsonl").read_text().splitlines()]
    for key in ("selected", "precision", "recall", "f1", "gmm_clean", "gmm_status/fit"):
        assert [s for s, _ in scalars[f"selection/{key}"]] == [1, 2], key
    assert np.allclose([v for _, v in scalars["selection/precision"]], [r["precision"] for r in selection])


def test_resume_rewrites_logs_from_the_checkpoint(tmp_path):
    """Records logged after the last checkpoint by a killed run disappear from JSONL, CSV and TensorBoard."""
    run = RunDir(tmp_path, {"a": 1}, {})
    run.start(None)
    for epoch in (1, 2, 3):
        run.log("metrics", {"phase": "lp", "epoch": epoch, "test_acc": epoch / 10, "info": {"n": epoch}})
        if epoch == 2:
            run.save_checkpoint("lp", 2, {})
    checkpoint = run.load_checkpoint()
    run.release()  # the killed process's lock goes with it
    resumed = RunDir(tmp_path, {"a": 1}, {})
    resumed.start(checkpoint)
    resumed.log("metrics", {"phase": "lp", "epoch": 3, "test_acc": 0.9, "info": {"n": 3}})
    resumed.release()
    scalars = _scalars(tmp_path / "tensorboard")
    assert scalars["metrics/test_acc"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.9))]
    assert scalars["metrics/info/n"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert list(pd.read_csv(tmp_path / "metrics.csv")["test_acc"]) == [0.1, 0.2, 0.9]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_before_features_reproduce_the_run(turn_run, tmp_path):
    """'Before' features from the cache equal a fresh forward pass of the re-created (seeded) backbone."""
    from noisyft.report.embedding import features_before_after, rebuild_train
    from noisyft.report.html import load_run

    view = load_run(turn_run)
    train = rebuild_train(view.config, view.labels)
    rows = np.arange(0, 120, 7)
    cached, after = features_before_after(turn_run, view.config, train, rows, num_workers=0)
    fresh, _ = features_before_after(turn_run, {**view.config, "cache_dir": str(tmp_path)}, train, rows, num_workers=0)
    assert np.allclose(cached, fresh, atol=1e-4)
    assert not np.allclose(cached, after, atol=1e-3)  # fine-tuning moved the backbone


def test_report_without_test_set_truth_or_selection(bare_run):
    page = (bare_run / "report" / "index.html").read_text()
    images = _embedded(page)
    assert set(images) == {"noise_rate.png", "loss_histograms.png", "accuracy.png", "suspects.png", "tsne.png"}
    for data in images.values():
        _valid_png(data)
    for note in ("True labels are unknown", "real noise rate cannot be shown", "logged no selection steps", "no test or validation set",
                 "did no full fine-tuning", "t-SNE of 50 of 60"):
        assert note in page, note
    assert 'href="classes/' not in page and not (bare_run / "report" / "classes").exists()  # all 3 classes shown
    assert "could not be produced" not in page


def test_report_of_moved_data_still_writes_a_page(turn_run, tmp_path):
    """Without the training images the suspect grid and t-SNE are skipped with a note."""
    run = tmp_path / "run"
    shutil.copytree(turn_run, run, ignore=shutil.ignore_patterns("report"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["data"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(cfg))
    page = api.report(run, num_workers=0).read_text()
    assert set(_embedded(page)) == FIGURES - {"suspects.png", "tsne.png"}
    assert page.count("training images could not be loaded") == 2


def test_report_cli_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "not a finished noisyft run" in err[1]


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no chromium/chromium-browser/google-chrome on PATH")
def test_headless_chromium_renders_every_image(turn_run, tmp_path):
    page = turn_run / "report" / "index.html"
    url = page.resolve().as_uri()
    base = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    n = page.read_text().count("<img")
    assert f"<title>noisyft report: {n}/{n} images loaded</title>" in dom, dom[:300]
    shot = tmp_path / "page.png"
    subprocess.run(base + ["--window-size=1280,4000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.shape == (4000, 1280)
    assert px.std() > 20 and (px < 128).mean() > 0.02  # figures and text, not a blank page
