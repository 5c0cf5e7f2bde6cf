"""Every registered method end to end, on a tiny random model and generated images with injected noise.

The test is parametrised over ``METHODS.names()``: a new method is run as soon as it
is registered. ``SETTINGS`` holds the few per-method options that keep each run tiny;
it must name exactly the registered methods (``test_settings_table_names_every_method``),
so a method cannot be added without deciding how it is tested.

Each run must leave a complete run directory: ``summary.json`` with the test accuracy,
``label_issues.csv`` with one row per training sample, a ``model.safetensors`` that
:func:`noisyft.api.load_model` rebuilds and that predicts what the run reported, and a
second ``fit`` with the same configuration returns the finished run without redoing it.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from noisyft import api
from noisyft.methods import METHODS

PER_CLASS, TEST_PER_CLASS = 8, 3
N_TRAIN = 3 * PER_CLASS
TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=16, num_workers=0, progress=False,
            lp_optim="adamw:1e-2:1e-5", noise="symflip:0.3", seed=1, epochs_lp=1, epochs_fft=1)
CLIP = "<tiny clip>"  # replaced by the module's tiny random CLIP directory
# small detector batches and a high lr: a random CLIP needs that many steps to judge any sample clean
DETECTOR = {"clip": CLIP, "detect_epochs": 2, "detect_batch_size": 4, "lr": 0.3, "n_ctx": 4, "vpt_tokens": 4}

# method → what differs from TINY (the fewest epochs that reach every step of the method)
SETTINGS: dict[str, dict] = {
    "ce-lp": {}, "ce-fft": {},
    "gce-lp": {}, "gce-fft": {},
    "sce-lp": {}, "sce-fft": {},
    "elr-lp": {}, "elr-fft": {},
    "turn": {},
    "small-loss-lp": {"epochs_lp": 2, "extra": {"warmup": 1}},  # one warm-up epoch, one selecting epoch
    "small-loss-fft": {"epochs_fft": 2, "extra": {"warmup_fft": 1}},
    "dividemix-lp": {"epochs_lp": 2, "extra": {"warmup": 1}},
    "dividemix-lp-img": {"epochs_lp": 2, "extra": {"warmup": 1}},
    "unicon-lp": {"epochs_lp": 2, "extra": {"warmup": 1}},
    "unicon-lp-img": {"epochs_lp": 2, "extra": {"warmup": 1}},
    "cleanlab": {"extra": {"folds": 2}},
    "cleanlab-fft": {"extra": {"folds": 2}},
    # the detector runs UNICON-LP with its own settings (5 warm-up epochs): one MixMatch epoch after them
    "consensus": {"epochs_lp": 6, "extra": {"folds": 2}},
    "consensus-detect": {"epochs_lp": 6, "extra": {"folds": 2}},
    "deft": {"extra": DETECTOR},  # detector: a tiny CLIP; phase 2 fine-tunes the tiny efficientnet
    "clip-label-match": {"backbone": CLIP},  # zero-shot CLIP detector, then fine-tuning of that CLIP's vision tower
}


def test_settings_table_names_every_method():
    """A registered method missing here would go untested; a name here that is not registered is stale."""
    registered, tested = set(METHODS.names()), set(SETTINGS)
    assert not registered - tested, f"add these methods to SETTINGS in {__file__}: {sorted(registered - tested)}"
    assert not tested - registered, f"SETTINGS names unknown methods: {sorted(tested - registered)}"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("every-method") / "imgs", PER_CLASS, TEST_PER_CLASS)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tests.test_deft import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("every-method-clip") / "tiny_clip")


def _options(method: str, clip_dir: str) -> dict:
    def fill(v):
        return clip_dir if v == CLIP else v

    opts = {**TINY, **SETTINGS[method]}
    opts["backbone"] = fill(opts["backbone"])
    opts["extra"] = {k: fill(v) for k, v in opts.get("extra", {}).items()}
    return opts


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS.names())
def test_method_leaves_a_complete_run_and_resumes_as_finished(images, clip_dir, tmp_path, method):
    assert method in SETTINGS, f"no SETTINGS entry for {method}: add one in {__file__}"
    opts = _options(method, clip_dir)
    res = api.fit(data=str(images), method=method, out=str(tmp_path / "run"), **opts)
    d = res.run_dir

    # the injected noise: recorded and visible in the given labels
    noise = json.loads((d / "noise.json").read_text())
    labels = pd.read_csv(d / "labels.csv")
    assert noise["kind"] == "symflip" and len(labels) == N_TRAIN
    wrong = (labels["given_label"] != labels["true_label"]).mean()
    assert wrong > 0 and noise["realised_rate"] == pytest.approx(wrong)

    # summary.json: what fit returned, with the delivered model's test accuracy
    summary = json.loads((d / "summary.json").read_text())
    assert summary == res.summary and summary["method"] == method and summary["n_train"] == N_TRAIN
    assert 0.0 <= summary["test_acc"] <= 1.0
    last = [m for m in _records(d / "metrics.jsonl") if "test_acc" in m][-1]
    assert summary["test_acc"] == last["test_acc"]

    # label_issues.csv: one row per training sample, a boolean verdict and a finite score
    issues = pd.read_csv(d / "label_issues.csv")
    assert len(issues) == N_TRAIN and sorted(issues["id"]) == sorted(labels["id"])
    assert sorted(issues["index"]) == list(range(N_TRAIN))
    assert issues["is_label_issue"].dtype == bool
    assert np.isfinite(issues["label_quality"]).all() and issues["label_quality"].between(0, 1).all()
    by_id = labels.set_index("id")
    assert (issues["given_label"].to_numpy() == by_id.loc[issues["id"], "given_label"].to_numpy()).all()
    assert (issues["is_truly_wrong"] == (issues["given_label"] != issues["true_label"])).all()

    # summary.json's noise rate: the share this method flags, and the truth (= the realised injected noise)
    rates = summary["noise_rate"]
    assert rates["estimated"]["overall"] == pytest.approx(issues["is_label_issue"].mean())
    assert rates["true"]["overall"] == pytest.approx(noise["realised_rate"])

    # model.safetensors: rebuilt by load_model, it predicts the training images as the run's table says
    model, meta = api.load_model(d)
    assert meta["classes"] == ["blue", "green", "red"]
    saved, state = load_file(str(d / "model.safetensors")), model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    pred = api.predict(d, str(images), num_workers=0, progress=False, top_k=3).set_index("id")  # train/ and test/
    assert len(pred) == N_TRAIN + 3 * TEST_PER_CLASS and set(pred["predicted_class"]) <= set(meta["classes"])
    mine = pred.loc[issues["id"]]
    clear = (mine["confidence"] - mine["top2_confidence"] > 1e-3).to_numpy()  # a near tie may flip between paths
    assert clear.mean() > 0.5
    assert (mine["predicted_class"].to_numpy()[clear] == issues["predicted_class"].to_numpy()[clear]).all()

    # a second fit with the same configuration returns the finished run, recomputing and rewriting nothing
    outputs = ("summary.json", "label_issues.csv", "model.safetensors", "metrics.jsonl", "labels.csv")
    stamp = {name: (d / name).stat().st_mtime_ns for name in outputs}
    again = api.fit(data=str(images), method=method, out=str(d), **opts)
    assert again.run_dir == d and again.summary == summary
    pd.testing.assert_frame_equal(again.label_issues.reset_index(drop=True), issues)
    assert {name: (d / name).stat().st_mtime_ns for name in outputs} == stamp


def test_fine_tuning_with_too_few_optimiser_steps_says_so(images, tmp_path, caplog):
    """A fresh head fine-tuned for fewer than FEW_FFT_STEPS optimiser steps draws one warning naming the steps and
    the --epochs-fft that would reach the threshold; enough steps, or no fine-tuning, draw none."""
    import logging
    from types import SimpleNamespace

    from noisyft.methods.base import FEW_FFT_STEPS, Context

    def warned(n, batch, epochs):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="noisyft.methods.base"):
            Context._warn_few_steps(SimpleNamespace(train=range(n), cfg=SimpleNamespace(batch_size=batch), epochs_fft=epochs))
        return [r.getMessage() for r in caplog.records]

    msg = warned(297, 128, 5)
    assert len(msg) == 1 and "only 15 optimiser steps (5 epochs × 3 batches of 297" in msg[0]
    assert f"--epochs-fft {-(-FEW_FFT_STEPS // 3)} makes {-(-FEW_FFT_STEPS // 3) * 3}" in msg[0]
    assert warned(297, 128, 20) == [] and warned(1800, 128, 5) == [] and warned(297, 128, 0) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="noisyft.methods.base"):
        api.fit(data=str(images), method="ce-fft", out=str(tmp_path / "run"), **TINY)
    assert any("optimiser steps" in r.getMessage() for r in caplog.records)
