"""is_label_issue is each method's own rule, and every method says what label_quality / is_label_issue mean."""
import numpy as np
import pandas as pd
import pytest

from noisyft import api
from noisyft.methods import METHODS
from noisyft.methods.unicon import unicon_split

TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=16, num_workers=0, progress=False,
            lp_optim="adamw:1e-2:1e-5", noise="symflip:0.3", seed=3, epochs_lp=4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("rules") / "imgs", 16, 4)


def _issues(tiny_data, tmp_path, method: str, **kw) -> pd.DataFrame:
    res = api.fit(data=str(tiny_data), method=method, out=str(tmp_path / method), **{**TINY, **kw})
    return pd.read_csv(res.run_dir / "label_issues.csv")


def test_every_method_documents_label_quality_in_one_uniform_line():
    for name in METHODS.names():
        fn = METHODS.get(name)
        text = getattr(fn, "LABEL_QUALITY", None)
        assert text and text.startswith("label_quality: ") and "; is_label_issue: " in text, name
        assert text in fn.__doc__, name  # the docstring carries it too


def test_methods_verbose_says_what_every_methods_label_issue_columns_mean(capsys):
    from noisyft import cli

    assert cli.main(["methods", "-v"]) in (0, None)
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert METHODS.get(name).LABEL_QUALITY in out, name


def test_gmm_methods_flag_at_tau(tiny_data, tmp_path):
    df = _issues(tiny_data, tmp_path, "ce-lp", tau=0.3)
    assert (df["is_label_issue"] == (df["label_quality"] <= 0.3)).all()


def test_dividemix_flags_with_its_own_p_threshold_not_tau(tiny_data, tmp_path):
    """DivideMix's GMM posteriors sit near 0 or 1, so a p_threshold near 1 is what tells its rule from ≤ τ."""
    df = _issues(tiny_data, tmp_path, "dividemix-lp", extra={"warmup": 2, "p_threshold": 0.9999})
    q, flags = df["label_quality"].to_numpy(), df["is_label_issue"].to_numpy()
    assert (flags == (q <= 0.9999)).all()
    assert (flags != (q <= 0.6)).any()  # the data tell the two rules apart, so ≤ τ would fail here


def test_unicon_flags_what_its_uniform_selection_leaves_out(tiny_data, tmp_path):
    df = _issues(tiny_data, tmp_path, "unicon-lp", extra={"warmup": 2}).sort_values("index")
    q, flags = df["label_quality"].to_numpy(), df["is_label_issue"].to_numpy()
    split, _, _ = unicon_split(1.0 - q, df["given_label"].to_numpy(), 3)  # red, green, blue
    expected = np.ones(len(df), dtype=bool)
    expected[split.labelled] = False
    assert (flags == expected).all()
    assert (flags != (q <= 0.6)).any()  # UNICON's class-balanced selection is not a threshold on label_quality
