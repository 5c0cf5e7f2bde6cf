"""End to end: TURN on generated images with a tiny randomly initialised backbone."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from noisyft import api
from noisyft.backbones import create_backbone
from noisyft.cli import main

TINY = dict(method="turn", backbone="test_efficientnet", pretrained=False, image_size=32, epochs_lp=15, epochs_fft=2,
            batch_size=32, num_workers=0, progress=False, lp_optim="adamw:1e-2:1e-5")


@pytest.fixture(scope="module")
def turn_run(tmp_path_factory):
    from tests.conftest import write_splits

    root = write_splits(tmp_path_factory.mktemp("e2e") / "imgs", 40, 10)
    res = api.fit(data=str(root), noise="symflip:0.3", out=str(root.parent / "run"), seed=3, **TINY)
    return root, res


def test_turn_writes_every_output(turn_run):
    root, res = turn_run
    d = res.run_dir
    for name in ("config.json", "labels.csv", "noise.json", "metrics.jsonl", "selection.jsonl", "timings.json",
                 "model.safetensors", "summary.json", "label_issues.csv", "state.json"):
        assert (d / name).exists(), name
    metrics = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["lp"] * 15 + ["fft"] * 2
    assert all(0 <= m["test_acc"] <= 1 for m in metrics)
    sel = [json.loads(l) for l in (d / "selection.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in sel] == [1, 2]
    for s in sel:  # class-balanced: selected = C × N_min, with precision/recall/F1 against truth
        assert s["selected"] == 3 * s["n_min"] and {"precision", "recall", "f1"} <= set(s)
    timings = json.loads((d / "timings.json").read_text())
    assert {"extraction", "lp", "selection", "fft"} <= set(timings)
    noise = json.loads((d / "noise.json").read_text())
    assert noise["kind"] == "symflip" and 0.2 < noise["realised_rate"] < 0.4
    assert res.summary["test_acc"] > 0.6  # chance: 1/3


def _initial_weights(seed: int) -> dict:
    """The backbone a run with ``seed`` starts from (fit seeds torch before building it), as saved-model keys."""
    torch.manual_seed(seed)
    backbone = create_backbone(TINY["backbone"], pretrained=False, image_size=TINY["image_size"])
    return {f"backbone.{k}": v.detach().clone() for k, v in backbone.state_dict().items()}


def _bn_stats(weights: dict) -> set[str]:
    return {k for k in weights if k.endswith(("running_mean", "running_var"))}


def test_fine_tuning_moves_the_weights_and_keeps_bn_statistics_frozen(turn_run):
    """The delivered model is the fine-tuned one (every backbone weight moved); BatchNorm statistics stay as they
    started (``freeze_bn_stats``, on by default)."""
    _, res = turn_run
    saved, initial = load_file(str(res.run_dir / "model.safetensors")), _initial_weights(3)
    stats = _bn_stats(initial)
    assert stats and all(torch.equal(saved[k], initial[k]) for k in stats)
    trained = [k for k in initial if k not in stats and initial[k].is_floating_point()]
    assert all(not torch.equal(saved[k], initial[k]) for k in trained)
    step = sum((saved[k] - initial[k]).norm() ** 2 for k in trained) ** 0.5 / sum(initial[k].norm() ** 2 for k in trained) ** 0.5
    assert step < 0.2  # a small step from these very weights (from another start it would be ~100%)
    assert set(saved) == set(initial) | {"head.weight", "head.bias"}


def test_no_freeze_bn_stats_lets_fine_tuning_update_them(tmp_path):
    from tests.conftest import write_splits

    root = write_splits(tmp_path / "imgs", 6, 2)
    opts = {**TINY, "epochs_lp": 1, "epochs_fft": 1}
    runs = {flag: api.fit(data=str(root), noise="symflip:0.3", out=str(tmp_path / f"run-{flag}"), seed=5,
                          freeze_bn_stats=flag, **opts).run_dir for flag in (True, False)}
    initial = _initial_weights(5)
    stats = _bn_stats(initial)
    frozen, free = (load_file(str(runs[flag] / "model.safetensors")) for flag in (True, False))
    assert all(torch.equal(frozen[k], initial[k]) for k in stats)
    assert all(not torch.equal(free[k], initial[k]) for k in stats)  # every BN layer saw the fine-tuning batches


def test_second_selection_uses_the_fine_tuned_model(turn_run, tmp_path):
    """Selection before FFT epoch 2 scores the model after epoch 1, not the probe: its losses are that model's CE."""
    root, res = turn_run
    probe, tuned = (np.load(res.run_dir / "losses" / f"epoch{e}.npy") for e in (1, 2))
    assert probe.shape == tuned.shape == (120,) and np.abs(probe - tuned).max() > 1e-2
    # the same run stopped after one fine-tuning epoch holds the model the second selection scored
    one = api.fit(data=str(root), noise="symflip:0.3", out=str(tmp_path / "one"), seed=3, **{**TINY, "epochs_fft": 1})
    np.testing.assert_allclose(np.load(one.run_dir / "losses" / "final.npy"), tuned, rtol=1e-5, atol=1e-6)
    # …and that model, loaded back, gives exactly these losses on the training images with their given labels
    pred = api.predict(one.run_dir, str(root), num_workers=0, progress=False, top_k=3).set_index("id")
    labels = pd.read_csv(one.run_dir / "labels.csv")
    rows = pred.loc[labels["id"]]
    prob = np.select([rows[c].to_numpy() == labels["given_class"].to_numpy()
                      for c in ("predicted_class", "top2_class", "top3_class")],
                     [rows[c].to_numpy() for c in ("confidence", "top2_confidence", "top3_confidence")])
    np.testing.assert_allclose(-np.log(prob), tuned, rtol=1e-4, atol=1e-5)


def _max_acc(metrics: list[dict], phase: str) -> float:
    return max(m["test_acc"] for m in metrics if m["phase"] == phase)


def test_summary_keeps_the_probe_apart_from_the_fine_tuned_model(turn_run):
    """The probe's best epoch is not TURN's accuracy: probe and fine-tuned numbers come from their own epochs."""
    _, res = turn_run
    s = json.loads((res.run_dir / "summary.json").read_text())
    metrics = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    lp = [m for m in metrics if m["phase"] == "lp"]
    fft = [m for m in metrics if m["phase"] == "fft"]
    assert s["probe"]["best_test_acc"] == _max_acc(metrics, "lp") and s["probe"]["last_test_acc"] == lp[-1]["test_acc"]
    assert s["fine_tuned"]["best_test_acc"] == _max_acc(metrics, "fft")
    assert s["fine_tuned"]["last_test_acc"] == fft[-1]["test_acc"] and s["fine_tuned"]["epochs"] == 2
    # no validation split: the headline is the delivered (last fine-tuned) model's accuracy
    assert (s["delivered_phase"], s["test_acc_rule"], s["test_acc_epoch"]) == ("fft", "last epoch", "fft:2")
    assert s["test_acc"] == fft[-1]["test_acc"]
    assert not {"best_test_acc", "last_test_acc", "val_selected_test_acc"} & set(s)  # the old mixed keys are gone


def test_val_selected_headline_and_console_line(tmp_path, capsys):
    """With --val-fraction the headline is the fine-tuned epoch the noisy validation split picks, never a probe epoch."""
    from tests.conftest import write_splits

    root = write_splits(tmp_path / "imgs", 20, 5)
    argv = ["fit", "--data", str(root), "--noise", "symflip:0.3", "--val-fraction", "0.25", "--out", str(tmp_path / "run"),
            "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "4",
            "--epochs-fft", "2", "--batch-size", "32", "--num-workers", "0", "--no-progress", "--lp-optim", "adamw:1e-2:1e-5",
            "--method", "turn"]  # the default, consensus, names its own delivered epoch (test_consensus.py)
    assert main(argv) == 0
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fft = [m for m in metrics if m["phase"] == "fft"]
    chosen = max(fft, key=lambda m: m["val_acc"])
    assert s["test_acc_rule"] == "val-selected" and s["test_acc_epoch"] == f"fft:{chosen['epoch']}"
    assert s["test_acc"] == chosen["test_acc"] == s["fine_tuned"]["val_selected_test_acc"]
    lp_chosen = max((m for m in metrics if m["phase"] == "lp"), key=lambda m: m["val_acc"])
    assert s["probe"]["val_selected_epoch"] == f"lp:{lp_chosen['epoch']}"
    line = next(l for l in out.splitlines() if "test acc" in l)
    assert (f"test acc {100 * fft[-1]['test_acc']:.1f} (last epoch; val-selected {100 * chosen['test_acc']:.1f} "
            f"@ fft:{chosen['epoch']}) | probe best {100 * _max_acc(metrics, 'lp'):.1f} | fine-tuned best/last "
            f"{100 * _max_acc(metrics, 'fft'):.1f}/{100 * fft[-1]['test_acc']:.1f}") in line


def test_label_issues_rank_wrong_labels_first(turn_run):
    _, res = turn_run
    df = pd.read_csv(res.run_dir / "label_issues.csv")
    assert len(df) == 120 and list(df["rank"]) == list(range(1, 121))
    assert df["label_quality"].is_monotonic_increasing
    assert {"id", "given_label", "predicted_label", "label_quality", "is_label_issue"} <= set(df.columns)
    truth = df["is_truly_wrong"].to_numpy()
    k = int(truth.sum())
    assert truth[:k].mean() > 0.6  # chance would be ~0.3
    assert res.summary["detection"]["auroc"] > 0.8


def test_same_config_returns_the_finished_run(turn_run):
    root, res = turn_run
    again = api.fit(data=str(root), noise="symflip:0.3", out=str(res.run_dir), seed=3, **TINY)
    assert again.summary == json.loads((res.run_dir / "summary.json").read_text())


def test_other_config_in_same_dir_is_refused(turn_run):
    root, res = turn_run
    from noisyft.errors import UserError

    with pytest.raises(UserError, match="another config"):
        api.fit(data=str(root), noise="symflip:0.3", out=str(res.run_dir), seed=4, **TINY)


def test_predict_with_a_finished_run(turn_run, capsys):
    root, res = turn_run
    df = api.predict(res.run_dir, str(root / "test"), num_workers=0, progress=False)
    assert len(df) == 30 and set(df["predicted_class"]) <= {"red", "green", "blue"}
    truth = df["id"].str.split("/").str[0]
    assert (df["predicted_class"] == truth).mean() > 0.6


def test_cli_fit_with_user_csv_labels(tmp_path):
    from tests.conftest import write_tree

    root = tmp_path / "photos"
    paths = write_tree(root, 30, seed=5)
    rng = np.random.default_rng(0)
    given = [p.split("/")[0] for p in paths]
    wrong = rng.choice(len(paths), 20, replace=False)
    for i in wrong:
        given[i] = {"red": "green", "green": "blue", "blue": "red"}[given[i]]
    pd.DataFrame({"path": paths, "label": given}).to_csv(tmp_path / "noisy.csv", index=False)
    argv = ["fit", "--data", str(root), "--labels", str(tmp_path / "noisy.csv"), "--method", "turn",
            "--folder-labels-are-true", "--out", str(tmp_path / "run"), "--backbone", "test_efficientnet",
            "--no-pretrained", "--image-size", "32", "--epochs-lp", "15", "--epochs-fft", "1", "--batch-size", "32",
            "--num-workers", "0", "--no-progress", "--lp-optim", "adamw:1e-2:1e-5"]
    assert main(argv) == 0
    df = pd.read_csv(tmp_path / "run" / "label_issues.csv")
    top = set(df["id"].head(20))
    assert len(top & {paths[i] for i in wrong}) >= 12  # chance: ~4.4 of 20


def test_in_memory_eval_images_change_no_result(turn_run, tmp_path):
    """The decoded-image memory is a speed setting only: with it off, TURN's outputs are identical."""
    root, res = turn_run
    off = api.fit(data=str(root), noise="symflip:0.3", out=str(tmp_path / "off"), seed=3, image_cache_mb=0, **TINY)
    key = lambda r: [(m["phase"], m["epoch"], m["test_acc"], m["train_loss"])
                     for m in map(json.loads, (r.run_dir / "metrics.jsonl").read_text().splitlines())]
    assert key(off) == key(res)
    pd.testing.assert_frame_equal(pd.read_csv(off.run_dir / "label_issues.csv"), pd.read_csv(res.run_dir / "label_issues.csv"))
