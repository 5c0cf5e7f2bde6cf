"""The label-noise rate told to the user: the estimator on known flip patterns, and a run's summary / console / bench."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from noisyft.run.noise_rate import class_rates, confident_joint_rates, noise_rate_block, noise_rate_text

CLASSES = ["a", "b", "c", "d"]


def _flipped(n_per_class=(100, 50, 40, 10), wrong=(20, 5, 0, 10), seed=0):
    """True labels, given labels with exactly ``wrong[k]`` of the samples *given* class k truly another class."""
    true, given = [], []
    for k, (n, w) in enumerate(zip(n_per_class, wrong)):
        given += [k] * n
        true += [(k + 1) % len(CLASSES)] * w + [k] * (n - w)
    order = np.random.default_rng(seed).permutation(len(given))
    return np.array(true)[order], np.array(given)[order]


def test_class_rates_are_exact_shares_per_given_class():
    true, given = _flipped()
    overall, per = class_rates(given, true != given, 4)
    assert overall == pytest.approx(35 / 200)
    assert per == pytest.approx([0.2, 0.1, 0.0, 1.0])
    _, per = class_rates(np.array([0, 0, 2]), np.array([True, False, False]), 3)
    assert per == [0.5, None, 0.0]  # a class nobody was given has no rate, not 0
    with pytest.raises(ValueError, match="length"):
        class_rates(np.array([0, 1]), np.array([True]), 2)


def test_confident_joint_recovers_the_flip_pattern_from_confident_probabilities():
    true, given = _flipped(wrong=(20, 5, 0, 3))
    probs = np.full((len(true), 4), 0.02)
    probs[np.arange(len(true)), true] = 0.94  # a model that knows the truth
    overall, per = confident_joint_rates(given, probs)
    assert overall == pytest.approx(28 / 200, abs=1e-9)
    assert per == pytest.approx([0.2, 0.1, 0.0, 0.3], abs=1e-9)
    # a model that merely repeats the given labels sees no noise at all
    parrot = np.full_like(probs, 0.02)
    parrot[np.arange(len(given)), given] = 0.94
    assert confident_joint_rates(given, parrot)[0] == pytest.approx(0.0, abs=1e-9)


def test_block_has_every_estimate_the_truth_and_their_errors():
    true, given = _flipped(wrong=(20, 5, 0, 3))
    flagged = true != given
    flagged[np.flatnonzero(given == 0)[:5]] = ~flagged[np.flatnonzero(given == 0)[:5]]  # 5 verdicts wrong in class a
    probs = np.eye(4)[true] * 0.9 + 0.025
    block = noise_rate_block(given, CLASSES, flagged, rule="my rule", pred_probs=probs, probs_source="oracle",
                             true_labels=true)
    assert block["estimated"]["rule"] == "my rule" and block["confident_joint"]["probs"] == "oracle"
    assert block["true"] == {"overall": pytest.approx(0.14), "per_class": pytest.approx({"a": 0.2, "b": 0.1, "c": 0.0, "d": 0.3})}
    est_a = flagged[given == 0].mean()
    assert block["estimated"]["per_class"]["a"] == pytest.approx(est_a) and est_a != pytest.approx(0.2)
    assert block["abs_error"]["estimated"]["overall"] == pytest.approx(abs(flagged.mean() - 0.14))
    assert block["abs_error"]["estimated"]["per_class_mean"] == pytest.approx(abs(est_a - 0.2) / 4)
    assert block["abs_error"]["confident_joint"]["overall"] == pytest.approx(0.0, abs=1e-9)
    json.dumps(block, allow_nan=False)  # plain JSON values
    text = noise_rate_text(block)
    assert text == f"noise est. {100 * flagged.mean():.1f}% (cleanlab CJ 14.0%; true 14.0%)"


def test_block_without_truth_or_usable_probabilities(caplog):
    given = np.array([0, 0, 1, 1, 2, 2])
    flagged = np.array([True, False, False, False, False, True])
    block = noise_rate_block(given, ["x", "y", "z"], flagged, rule="r", pred_probs=np.ones((6, 2)))  # wrong width
    assert set(block) == {"estimated"} and "confident-joint" in caplog.text
    assert noise_rate_text(block) == "noise est. 33.3%"
    assert noise_rate_text(None) is None and noise_rate_text({}) is None


# ---------------------------------------------------------------- a run

# Colour classes (conftest) are separable even for a random tiny backbone: a linear probe learns them despite
# 30 % flipped labels, so a sound estimate lands near the truth and a broken one (0, or every sample) does not.
TOLERANCE_CJ, TOLERANCE_EST = 0.05, 0.10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from noisyft.cli import main
    from tests.conftest import write_splits

    root = write_splits(tmp_path_factory.mktemp("noise_rate") / "imgs", 40, 4)
    out = root.parent / "run"
    argv = ["fit", "--data", str(root), "--noise", "symflip:0.3", "--method", "ce-lp", "--backbone", "test_efficientnet",
            "--no-pretrained", "--image-size", "32", "--epochs-lp", "15", "--batch-size", "32", "--num-workers", "0",
            "--lp-optim", "adamw:1e-2:1e-5", "--seed", "3", "--no-progress", "--out", str(out)]
    return out, argv


def test_summary_reports_the_rates_and_the_console_says_them(run, capsys):
    from noisyft.cli import main

    out, argv = run
    assert main(argv) == 0
    console = capsys.readouterr().out.strip().splitlines()[-1]
    block = json.loads((out / "summary.json").read_text())["noise_rate"]
    noise = json.loads((out / "noise.json").read_text())
    labels = pd.read_csv(out / "labels.csv")
    issues = pd.read_csv(out / "label_issues.csv")

    # the truth: noise.json's realised rate, and per class the share of each given class whose true label differs
    assert block["true"]["overall"] == pytest.approx(noise["realised_rate"])
    for name, rate in block["true"]["per_class"].items():
        mine = labels[labels["given_class"] == name]
        assert rate == pytest.approx((mine["given_label"] != mine["true_label"]).mean())
    # the detector's estimate is the share label_issues.csv flags, per given class too
    assert block["estimated"]["overall"] == pytest.approx(issues["is_label_issue"].mean())
    for name, rate in block["estimated"]["per_class"].items():
        assert rate == pytest.approx(issues.loc[issues["given_class"] == name, "is_label_issue"].mean())
    assert "GMM" in block["estimated"]["rule"] and "in-sample" in block["confident_joint"]["probs"]
    # easy data: both estimates near the truth
    true = block["true"]["overall"]
    assert 0.2 < true < 0.4
    assert abs(block["confident_joint"]["overall"] - true) <= TOLERANCE_CJ
    assert abs(block["estimated"]["overall"] - true) <= TOLERANCE_EST
    assert block["abs_error"]["estimated"]["overall"] == pytest.approx(abs(block["estimated"]["overall"] - true))
    pct = lambda key: f"{100 * block[key]['overall']:.1f}%"
    assert f"noise est. {pct('estimated')} (cleanlab CJ {pct('confident_joint')}; true {pct('true')})" in console


def test_bench_table_shows_the_noise_rate(run, tmp_path):
    from noisyft.bench.grid import BenchSpec
    from noisyft.bench.results import aggregate, noise_rate_columns, results_markdown

    out, argv = run
    if not (out / "summary.json").exists():  # run alone (-k): the fit the console test runs first
        from noisyft.cli import main

        assert main(argv) == 0
    block = json.loads((out / "summary.json").read_text())["noise_rate"]

    cols = noise_rate_columns(block)
    assert (cols["noise_est"], cols["noise_true"]) == (block["estimated"]["overall"], block["true"]["overall"])
    spec = BenchSpec.from_dict({"data": "d", "noises": ["sym:0.6", None], "backbones": "b", "seeds": [0, 1],
                                "methods": ["turn", "ce-lp"]})
    est = {("turn", 0): 0.50, ("turn", 1): 0.54, ("ce-lp", 0): 0.40, ("ce-lp", 1): 0.44}
    rows = [{"cell": c.name, **vars(c), "status": "done", "test_acc": 0.5, "time_train": 1.0, "auroc": None,
             "selection": {}, **noise_rate_columns(None if c.noise is None else
                                                   {"estimated": {"overall": est[c.method, c.seed]},
                                                    "confident_joint": {"overall": 0.5},
                                                    "true": {"overall": 0.48 + 0.02 * c.seed}})}
            for c in spec.cells()]
    md = results_markdown({"spec": spec.to_dict(), "cells": rows, "table": aggregate(rows),
                           "counts": {"done": len(rows), "failed": 0, "running": 0, "pending": 0}})
    assert "| Method | sym:0.6 noise | given labels noise |" in md
    assert "| turn | 52.00 / 50.00 (49.00) | — |" in md and "| ce-lp | 42.00 / 50.00 (49.00) | — |" in md
