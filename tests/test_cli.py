"""CLI: help for every verb, one-line errors (no traceback) that name what is wrong."""
import pytest

from noisyft.cli import build_parser, main
from tests.conftest import cli_error as _err

VERBS = ["fit", "detect", "demo", "predict", "methods"]


@pytest.mark.parametrize("verb", VERBS)
def test_help_for_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"noisyft {verb}" in out
    if verb in ("fit", "detect", "demo"):
        assert "--noise" in out and "--backbone" in out and "--config" in out


def test_top_level_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(v in out for v in VERBS)




def test_unknown_method_suggests(image_tree, capsys):
    err = _err(["fit", "--data", str(image_tree), "--method", "trun"], capsys)
    assert "unknown method 'trun'" in err and "turn" in err


def test_missing_data_path_is_named(tmp_path, capsys):
    err = _err(["fit", "--data", str(tmp_path / "nope")], capsys)
    assert str(tmp_path / "nope") in err


def test_bad_noise_spec_is_named(image_tree, capsys):
    err = _err(["fit", "--data", str(image_tree), "--noise", "symetric:0.4", "--out", str(image_tree.parent / "r")], capsys)
    assert "symetric" in err


def test_unknown_backbone_suggests(image_tree, capsys):
    err = _err(["fit", "--data", str(image_tree), "--backbone", "efficientnet_lite00", "--out", str(image_tree.parent / "r")], capsys)
    assert "efficientnet_lite0" in err


def test_config_file_sets_options_and_rejects_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs-lp: 3\nnoise: sym:0.2\n")
    ns = build_parser().parse_args(["fit", "--config", str(cfg), "--epochs-lp", "5"])
    from noisyft.cli import config_from_args

    c = config_from_args(ns)
    assert c.epochs_lp == 5 and c.noise == "sym:0.2"  # command line overrides the file
    cfg.write_text("epoch_lp: 3\n")
    err = _err(["fit", "--config", str(cfg)], capsys)
    assert "epoch_lp" in err and "epochs_lp" in err


def test_bad_optimiser_text(image_tree, capsys):
    err = _err(["fit", "--data", str(image_tree), "--fft-optim", "adamw:fast", "--backbone", "test_vit", "--no-pretrained",
                "--out", str(image_tree.parent / "r2")], capsys)
    assert "--fft-optim" in err
