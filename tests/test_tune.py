"""noisyft tune (Ray Tune): the tune file's checks, trials as run directories, results, and a rerun that trains nothing."""
import json
import sys

import pytest
import yaml

from noisyft.cli import main
from noisyft.errors import UserError
from noisyft.tune import TuneSpec, apply_point, load_tune_spec, run_tune, trial_objective
from tests.conftest import cli_error

SETTINGS = dict(method="turn", noise="symflip:0.3", backbone="test_efficientnet", pretrained=False, image_size=32,
                epochs_lp=2, epochs_fft=1, batch_size=16, num_workers=0, val_fraction=0.25, lp_optim="adamw:1e-2:1e-5")
SEARCH = {"lr_fft": {"loguniform": [1.0e-4, 1.0e-3]}, "gce_q": {"choice": [0.5, 0.7]}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("tune") / "imgs", 12, 4)


def _spec(data, **changes) -> TuneSpec:
    d = {"data": str(data), **SETTINGS, "search": SEARCH, **changes}
    return TuneSpec.from_dict({k: v for k, v in d.items() if v is not None}, "tune.yaml")


# ---------------------------------------------------------------------------
# the tune file
# ---------------------------------------------------------------------------


def test_missing_val_fraction_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(UserError, match="val_fraction: tune scores trials on the noisy validation split"):
        _spec("demo", val_fraction=None)
    f = tmp_path / "tune.yaml"
    f.write_text(yaml.safe_dump({k: v for k, v in {"data": "demo", **SETTINGS, "search": SEARCH}.items()
                                 if k != "val_fraction"}))
    assert "val_fraction" in cli_error(["tune", "--config", str(f), "--out", str(tmp_path / "o")], capsys)
    assert not (tmp_path / "o").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("search, names", [
    ({"gce_q": {"choice": [0.5, 1.5]}}, "search: gce_q 1.5: must be in (0, 1]"),  # the fit's own range check
    ({"lr_fftt": {"loguniform": [1e-5, 1e-3]}}, "search.lr_fftt: not a searchable fit setting (did you mean lr_fft?)"),
    ({"tau": {"normal": [0.5, 0.1]}}, "search.tau: expected one of loguniform"),
    ({"epochs_fft": {"randint": [5, 2]}}, "search.epochs_fft: randint [5, 2]: low must be below high"),
    ({"lr_fft": {"loguniform": [0, 1e-3]}}, "search.lr_fft: loguniform [0, 0.001]: both bounds must be > 0"),
    ({"tau": {"uniform": [1, "x"]}}, "search.tau: uniform needs two finite numbers"),
    ({"max_train": {"choice": [20, 2.5]}}, "search: max_train 2.5: expected a whole number"),
    ({"extra.warmpu": {"choice": [1]}}, "search: extra.warmpu: method turn has no settings of its own"),
    ({"cache_dir": {"choice": ["a", "b"]}}, "search.cache_dir: not a searchable fit setting"),
    ({"tau": {"choice": []}}, "search.tau: choice needs a non-empty list"),
])
def test_bad_search_spec_names_the_key(search, names):
    with pytest.raises(UserError) as e:
        _spec("demo", search=search)
    assert names in str(e.value) and "\n" not in str(e.value)


def test_tune_file_errors_reach_the_cli_as_one_line(tmp_path, capsys):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"data": "demo", **SETTINGS, "search": {"gce_q": {"uniform": [0.5, 1.5]}}}))
    assert "search: gce_q 1.5" in cli_error(["tune", "--config", str(f)], capsys)
    f.write_text(yaml.safe_dump({"data": "demo", **SETTINGS, "tau": 0.5, "search": {"tau": {"choice": [0.5]}}}))
    assert "search.tau: also set outside search" in cli_error(["tune", "--config", str(f)], capsys)
    f.write_text(yaml.safe_dump({"data": "demo", **SETTINGS}))
    assert "needs a search: block" in cli_error(["tune", "--config", str(f)], capsys)


def test_learning_rate_keys_keep_the_optimiser_and_its_weight_decay():
    settings = {"fft_optim": "sgd:0.1:5e-4", "backbone": "b"}
    assert apply_point(settings, {"lr_fft": 0.01})["fft_optim"] == "sgd:0.01:0.0005"
    # not configured: the backbone's paper setting (name, weight decay) with the drawn learning rate
    defaults = {"b": [["adamw", 1e-5], ["sgd", 0.0]]}
    assert apply_point({"backbone": "b"}, {"lr_lp": 3e-3, "lr_fft": 2e-4}, defaults) | {"extra": {}} == {
        "backbone": "b", "lp_optim": "adamw:0.003:1e-05", "fft_optim": "sgd:0.0002:0.0", "extra": {}}
    assert apply_point({"extra": {"a": 1}}, {"extra.b": 2, "tau": 0.5}) == {"extra": {"a": 1, "b": 2}, "tau": 0.5}


def test_without_ray_the_commands_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as without the dist extra
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"data": "demo", **SETTINGS, "search": SEARCH}))
    assert 'pip install -e ".[dist]"' in cli_error(["tune", "--config", str(f), "--out", str(tmp_path / "o")], capsys)
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"data": "demo", "noises": [None], "backbones": ["test_vit"], "methods": ["ce-lp"],
                                    "seeds": [0]}))
    err = cli_error(["bench", "--config", str(grid), "--out", str(tmp_path / "b"), "--executor", "ray"], capsys)
    assert err.startswith("error: bench --executor ray needs Ray") and 'pip install -e ".[dist]"' in err


# ---------------------------------------------------------------------------
# a search on a local Ray
# ---------------------------------------------------------------------------


def test_two_trials_write_results_and_a_rerun_trains_nothing(local_ray, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_data.parent)  # a relative data path: trials (which Tune runs elsewhere) get it absolute
    spec = _spec("imgs")
    out = tmp_path / "tune"
    lines: list[str] = []
    res = run_tune(spec, out, num_samples=2, cpus_per_trial=2, verbose=0, echo=lines.append)
    assert any(line.startswith("features of test_efficientnet") for line in lines)  # extracted before the trials

    saved = json.loads((out / "tune.json").read_text())
    trials = saved["trials"]
    assert len(trials) == 2 and all(t["status"] == "done" and not t["reused"] for t in trials)
    assert len({json.dumps(t["settings"], sort_keys=True) for t in trials}) == 2
    assert {t["trial"] for t in trials} == {p.name for p in (out / "trials").iterdir()}
    for t in trials:  # an ordinary run directory, scored from its own log
        run = out / "trials" / t["trial"]
        cfg = json.loads((run / "config.json").read_text())["config"]
        assert cfg["data"] == str(tiny_data.resolve()) and cfg["val_fraction"] == 0.25
        assert cfg["fft_optim"].split(":")[1] == repr(t["settings"]["lr_fft"]) and cfg["gce_q"] == t["settings"]["gce_q"]
        assert trial_objective(run)["val_acc"] == t["val_acc"] and t["val_epoch"].startswith("fft:")
    best = saved["best"]
    assert best["val_acc"] == max(t["val_acc"] for t in trials)
    md = (out / "tune.md").read_text()
    assert f"**Best trial: `{best['trial']}`**" in md and "NOT used to choose" in md
    assert (out / "tune.png").stat().st_size > 0

    models = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/model.safetensors")}
    assert len(models) == 2
    f = tmp_path / "tune.yaml"  # the same search again, from the command line
    f.write_text(yaml.safe_dump(spec.to_dict()))
    assert main(["tune", "--config", str(f), "--out", str(out), "--num-samples", "2", "--cpus-per-trial", "2",
                 "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert f"**Best trial: `{best['trial']}`**" in printed
    again = json.loads((out / "tune.json").read_text())
    assert all(t["reused"] for t in again["trials"]) and len(again["trials"]) == 2
    assert {p: p.stat().st_mtime_ns for p in models} == models  # nothing trained again
    assert again["best"]["trial"] == best["trial"] and again["best"]["val_acc"] == best["val_acc"]
