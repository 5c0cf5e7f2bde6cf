"""Option validation before any work, typed method settings, and one fine-tuning budget (--epochs-fft)."""
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from noisyft import api
from noisyft.cli import main
from noisyft.config import FitConfig
from noisyft.data.cifar100 import FINE_CLASSES
from noisyft.errors import UserError
from noisyft.methods import METHODS, resolve_settings, validate_config
from noisyft.methods.settings import settings_class
from tests.conftest import cli_error as _err

NO_CUDA = not torch.cuda.is_available()




# --- every option value, checked before any work ---------------------------------------------------------

BAD = [  # (extra argv, fragment of the one-line error)
    (["--image-size", "0"], "--image-size 0: must be > 0"),
    (["--batch-size", "-1"], "--batch-size -1: must be > 0"),
    (["--epochs-lp", "-1"], "--epochs-lp -1: must be >= 0"),
    (["--epochs-fft", "-2"], "--epochs-fft -2: must be >= 0"),
    (["--max-train", "0"], "--max-train 0: must be > 0"),
    (["--max-test", "-3"], "--max-test -3: must be > 0"),
    (["--test-fraction", "1"], "--test-fraction 1.0: must be in [0, 1)"),
    (["--val-fraction", "-0.1"], "--val-fraction -0.1: must be in [0, 1)"),
    (["--tau", "1"], "--tau 1.0: must be in (0, 1)"),
    (["--tau", "nan"], "--tau nan: expected a finite number"),
    (["--gce-q", "0"], "--gce-q 0.0: must be in (0, 1]"),
    (["--gce-q", "1.5"], "--gce-q 1.5: must be in (0, 1]"),
    (["--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
    (["--num-workers", "-1"], "--num-workers -1: must be >= 0"),
    (["--image-cache-mb", "-5"], "--image-cache-mb -5: must be >= 0"),
    (["--lp-optim", "adamw:-1e-3"], "--lp-optim adamw:-1e-3: the learning rate must be a positive finite number"),
    (["--fft-optim", "sgd:inf"], "--fft-optim sgd:inf: the learning rate must be a positive finite number"),
    (["--fft-optim", "sgd:0.1:-1"], "--fft-optim sgd:0.1:-1: the weight decay must be a finite number >= 0"),
    (["--fft-optim", "sgd:0.1:0:9"], "--fft-optim sgd:0.1:0:9: expected name:lr:weight_decay"),
    (["--fft-optim", "rmsprop:0.1"], "optimiser must be sgd, adam or adamw"),
    (["--augment", "flip"], "--augment flip: choose from flip-affine, crop, none"),
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda, cuda:N or mps"),
    (["--noise", "sym:1.5"], "--noise 'sym:1.5': rate 1.5 is outside [0, 1]"),
    (["--noise", "sym"], "expected KIND:RATE"),
    (["--method", "small-loss-lp", "--extra", "keep_fractoin=0.3"],
     "--extra keep_fractoin: not a setting of method small-loss-lp (did you mean keep_fraction?)"),
    (["--method", "small-loss-lp", "--extra", "keep_fraction=1.5"], "--extra keep_fraction=1.5: must be in (0, 1]"),
    (["--method", "small-loss-lp", "--extra", "warmup=two"], "--extra warmup=two: expected a whole number, not the string 'two'"),
    (["--method", "small-loss-lp", "--extra", "warmup=true"], "--extra warmup=true: expected a whole number, not the bool true"),
    (["--method", "unicon-lp", "--extra", "sr=NaN"], "--extra sr=nan: expected a finite number"),
    (["--method", "deft", "--extra", "peft=adapter"], "--extra peft=adapter: choose from vpt, lora, none"),
    (["--method", "gce-lp", "--extra", "q=0.5"], "--extra q: not a method setting any more; GCE's q is the top-level option --gce-q"),
    (["--method", "ce-fft", "--extra", "baseline_fft_epochs=2"], "--extra baseline_fft_epochs: not a method setting any more; "
                                                                 "the fine-tuning budget is --epochs-fft"),
    (["--method", "deft", "--extra", "adapt_epochs=2"], "DEFT's phase-2 fine-tuning epochs are --epochs-fft"),
    (["--method", "turn", "--extra", "warmup=1"], "--extra warmup: method turn has no settings of its own"),
    (["--extra", "warmup"], "--extra 'warmup': expected KEY=VALUE"),
]


@pytest.mark.parametrize("argv,fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_values_are_one_line_naming_the_option(image_tree, tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    err = _err(["fit", "--data", str(image_tree), "--out", str(out), *argv], capsys)
    assert fragment in err
    assert not out.exists()  # refused before any work


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_device_where_there_is_none(image_tree, capsys):
    err = _err(["fit", "--data", str(image_tree), "--device", "cuda"], capsys)
    assert err == "error: --device cuda: no CUDA device is available here; use cpu or auto"
    assert "--device cuda:3" in _err(["fit", "--data", str(image_tree), "--device", "cuda:3"], capsys)


def test_wrong_kind_of_path(image_tree, tmp_path, capsys):
    assert "--labels " + str(image_tree) + ": is a folder" in _err(["fit", "--data", str(image_tree), "--labels", str(image_tree)], capsys)
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert f"--out {f}: is a file" in _err(["fit", "--data", str(image_tree), "--out", str(f)], capsys)
    assert f.read_text() == "mine"


def test_non_numeric_command_line_value_is_refused_by_the_parser(capsys):
    assert main(["fit", "--epochs-lp", "abc"]) == 2
    assert "--epochs-lp: invalid int value: 'abc'" in capsys.readouterr().err


CONFIG_BAD = [  # (config file text, fragment after "--config FILE: ")
    ("epochs_lp: '5'\n", "epochs_lp 5: expected a whole number, not the string '5'"),
    ("epochs_lp: 2.5\n", "epochs_lp 2.5: expected a whole number"),
    ("batch_size: true\n", "batch_size true: expected a whole number, not the bool true"),
    ("tau: .inf\n", "tau inf: expected a finite number"),
    ("tau: .nan\n", "tau nan: expected a finite number"),
    ("tau: 'high'\n", "tau high: expected a number, not the string 'high'"),
    ("gce_q: 0\n", "gce_q 0.0: must be in (0, 1]"),
    ("pretrained: 'no'\n", "pretrained no: expected true or false, not the string 'no'"),
    ("noise: sym:2\n", "noise 'sym:2': rate 2 is outside [0, 1]"),
    ("lp_optim: adamw:0\n", "lp_optim adamw:0: the learning rate must be a positive finite number"),
    ("augment: random\n", "augment random: choose from flip-affine, crop, none"),
    ("method: small-loss-lp\nextra: {keep_fractoin: 0.3}\n", "extra.keep_fractoin: not a setting of method small-loss-lp "
                                                              "(did you mean keep_fraction?)"),
    ("method: small-loss-lp\nextra: {warmup: '3'}\n", "extra.warmup=3: expected a whole number, not the string '3'"),
    ("extra: [1, 2]\n", "extra: expected a mapping of KEY: VALUE, not a list"),
]


@pytest.mark.parametrize("text,fragment", CONFIG_BAD, ids=[t.strip() for t, _ in CONFIG_BAD])
def test_bad_config_file_values_name_the_file_and_key(tmp_path, capsys, text, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    err = _err(["fit", "--config", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert f"--config {cfg}: {fragment}" in err
    assert not (tmp_path / "run").exists()


def test_command_line_overrides_a_bad_file_value_and_extra_merges(tmp_path):
    from noisyft.cli import build_parser, config_from_args

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"tau": 2, "method": "small-loss-lp", "extra": {"warmup": 2, "keep_fraction": 0.4},
                                 "epochs_lp": 5.0}))
    cfg = config_from_args(build_parser().parse_args(["fit", "--config", str(f), "--tau", "0.5", "--extra", "warmup=3"]))
    assert cfg.tau == 0.5 and cfg.extra == {"warmup": 3, "keep_fraction": 0.4}
    assert cfg.epochs_lp == 5 and isinstance(cfg.epochs_lp, int)  # 5.0 and 5 are one run identity


def test_python_api_validates_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"--tau 2.0: must be in \(0, 1\)"):
        api.fit(data=str(tmp_path / "missing"), tau=2.0, out=str(tmp_path / "run"))
    with pytest.raises(UserError, match="did you mean folds"):
        api.fit(data=str(tmp_path / "missing"), method="cleanlab", extra={"fold": 3}, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    cfg = validate_config(FitConfig(method="unicon-lp", extra={"sr": 1, "warmup": 2.0}))
    assert cfg.extra == {"sr": 1.0, "warmup": 2} and type(cfg.extra["sr"]) is float  # declared types


# --- settings per method ---------------------------------------------------------------------------------


def test_every_method_registers_a_settings_dataclass():
    for name in METHODS.names():
        cls = METHODS.settings(name)
        assert cls is not None and dataclasses.is_dataclass(cls), name
        s = resolve_settings(FitConfig(method=name))
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
            assert hasattr(s, f.name)


def test_methods_lists_one_line_each_and_verbose_lists_every_setting(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == METHODS.names()
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    sections, current = {}, None
    for line in out.splitlines():
        if not line.startswith(" "):
            current = line.split()[0]
            sections[current] = []
        else:
            sections[current].append(line.strip())
    assert list(sections) == METHODS.names()
    for name in METHODS.names():
        cls = settings_class(name)
        text = "\n".join(sections[name])
        for f in dataclasses.fields(cls):
            assert f"--extra {f.name}=" in text and f.metadata["help"] in text, (name, f.name)
        if cls.EPOCHS_FFT is not None:
            assert f"full fine-tuning: {cls.EPOCHS_FFT} epochs unless --epochs-fft is given" in text
    assert "--extra keep_fraction=0.5 (float)" in "\n".join(sections["small-loss-lp"])
    assert "full fine-tuning: 4 epochs" in "\n".join(sections["turn"])
    assert "full fine-tuning: 5 epochs" in "\n".join(sections["gce-fft"])


@pytest.mark.parametrize("method", ["elr-lp", "elr-fft"])
def test_elr_defaults_follow_the_dataset(method):
    c10 = resolve_settings(FitConfig(method=method, data="cifar10:/x"), [f"c{i}" for i in range(10)])
    assert (c10.beta, c10.lam) == (0.7, 3.0)
    by_name = resolve_settings(FitConfig(method=method, data="cifar100:/x"), [f"c{i}" for i in range(100)])
    assert (by_name.beta, by_name.lam) == (0.9, 7.0)
    by_classes = resolve_settings(FitConfig(method=method, data="my_export.zip"), list(reversed(FINE_CLASSES)))
    assert (by_classes.beta, by_classes.lam) == (0.9, 7.0)
    other100 = resolve_settings(FitConfig(method=method, data="photos/"), [f"c{i}" for i in range(100)])
    assert (other100.beta, other100.lam) == (0.7, 3.0)
    given = resolve_settings(FitConfig(method=method, data="cifar100", extra={"beta": 0.8}), FINE_CLASSES)
    assert (given.beta, given.lam) == (0.8, 7.0)  # the user's value wins, the other default still follows the data


def test_loss_parameters_come_from_settings_and_gce_q_from_one_place():
    from noisyft.methods.baselines import _loss_kwargs

    def ctx(method, **kw):
        cfg = FitConfig(method=method, **kw)
        return SimpleNamespace(cfg=cfg, settings=resolve_settings(cfg, FINE_CLASSES))

    assert _loss_kwargs(ctx("elr-lp", data="cifar100"), "elr") == {"beta": 0.9, "lam": 7.0}
    assert _loss_kwargs(ctx("sce-fft", extra={"beta": 0.5}), "sce") == {"alpha": 1.0, "beta": 0.5}
    assert _loss_kwargs(ctx("gce-lp", gce_q=0.3), "gce") == {"q": 0.3}
    assert _loss_kwargs(ctx("gce-fft"), "gce") == {"q": 0.7}


def test_dividemix_defaults_follow_the_noise_rate():
    assert resolve_settings(FitConfig(method="dividemix-lp", noise="sym:0.2")).lambda_u == 25.0
    s = resolve_settings(FitConfig(method="dividemix-lp", noise="sym:0.9"))
    assert (s.lambda_u, s.p_threshold) == (150.0, 0.6)
    assert resolve_settings(FitConfig(method="dividemix-lp-img", noise="sym:0.9", extra={"lambda_u": 10})).lambda_u == 10.0


def test_fine_tuning_budget_is_the_methods_own_unless_given():
    from noisyft.methods.base import Context

    def epochs(method, **kw):
        cfg = FitConfig(method=method, **kw)
        return Context(cfg, SimpleNamespace(classes=["a", "b"]), None, None, None, None, None, None, None).epochs_fft

    assert [epochs(m) for m in ("turn", "ce-fft", "gce-fft", "sce-fft", "elr-fft", "small-loss-fft", "cleanlab-fft", "deft")] \
        == [4, 5, 5, 5, 5, 5, 5, 10]
    assert epochs("deft", extra={"real_noise": True}) == 5
    assert all(epochs(m, epochs_fft=2) == 2 for m in METHODS.names() if settings_class(m).EPOCHS_FFT is not None)
    assert epochs("ce-lp") == 0


def test_bench_grid_common_extra_goes_to_the_methods_that_have_it(tmp_path):
    from noisyft.bench.grid import BenchSpec, Cell

    grid = {"data": "demo", "noises": "sym:0.6", "backbones": "test_vit", "methods": ["ce-lp", "small-loss-lp"],
            "seeds": 0, "extra": {"warmup": 2}}
    spec = BenchSpec.from_dict(grid, "g.yaml")
    assert spec.fit_config(Cell("demo", "sym:0.6", "test_vit", "ce-lp", 0), tmp_path).extra == {}
    assert spec.fit_config(Cell("demo", "sym:0.6", "test_vit", "small-loss-lp", 0), tmp_path).extra == {"warmup": 2}
    with pytest.raises(UserError, match=r"g.yaml: extra.warmpu: no method of the grid has this setting \(did you mean warmup"):
        BenchSpec.from_dict({**grid, "extra": {"warmpu": 2}}, "g.yaml")
    with pytest.raises(UserError, match=r"g.yaml: extra.baseline_fft_epochs: .*--epochs-fft"):
        BenchSpec.from_dict({**grid, "extra": {"baseline_fft_epochs": 2}}, "g.yaml")
    with pytest.raises(UserError, match=r"g.yaml: tau 1.0: must be in \(0, 1\)"):
        BenchSpec.from_dict({**grid, "tau": 1.0}, "g.yaml")
    with pytest.raises(UserError, match=r"g.yaml: per_method.small-loss-lp: extra.warmup=-1: must be >= 0"):
        BenchSpec.from_dict({**grid, "per_method": {"small-loss-lp": {"extra": {"warmup": -1}}}}, "g.yaml")


# --- -fft baselines honour --epochs-fft (end to end) -------------------------------------------------------

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
        "--num-workers", "0", "--no-progress", "--noise", "symflip:0.3", "--image-cache-mb", "0"]


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("settings") / "imgs", 8, 2)


@pytest.mark.parametrize("method", ["ce-fft", "gce-fft", "sce-fft", "elr-fft"])
def test_fft_baselines_honour_epochs_fft(small_tree, tmp_path, method):
    """Before, every -fft baseline ran 5 epochs whatever --epochs-fft said (it read extra.baseline_fft_epochs)."""
    out = tmp_path / "run"
    assert main(["fit", "--data", str(small_tree), "--method", method, "--epochs-fft", "1", "--out", str(out), *TINY]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics if m["phase"] == "fft"] == [1]


def test_api_refuses_an_unknown_keyword_with_did_you_mean():
    from noisyft import api
    from noisyft.errors import UserError

    with pytest.raises(UserError, match=r"unknown config key\(s\): epoch_lp \(did you mean epochs_lp\?\)"):
        api.fit(data="demo", epoch_lp=3)
