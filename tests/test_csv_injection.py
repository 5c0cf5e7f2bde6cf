"""Spreadsheet formula injection: file and class names written to CSVs are escaped (OWASP), and read back intact."""
import numpy as np
import pandas as pd
from PIL import Image

from noisyft.csvsafe import escape_cell, escape_frame, read_csv, unescape_cell, write_csv
from noisyft.cli import main

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs-lp", "2",
        "--batch-size", "16", "--num-workers", "0", "--no-progress", "--seed", "0"]
HOSTILE = ["=cmd", "+sum", "@at"]  # class folder names
HOSTILE_FILE = "-2+3.png"


def test_formula_like_text_is_quoted_numbers_are_not():
    for s in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert escape_cell(s) == "'" + s and unescape_cell(escape_cell(s)) == s
    for s in ("cat/1.png", "", "a=b", " =x"):
        assert escape_cell(s) == s
    assert escape_cell("'quoted") == "''quoted" and unescape_cell("''quoted") == "'quoted"  # reversible
    assert escape_cell(-3) == -3 and escape_cell(-0.5) == -0.5
    df = pd.DataFrame({"id": ["=a", "b"], "n": [-1, 2], "x": [-1.5, 0.0]})
    out = escape_frame(df)
    assert list(out["id"]) == ["'=a", "b"] and list(out["n"]) == [-1, 2] and list(out["x"]) == [-1.5, 0.0]
    assert list(df["id"]) == ["=a", "b"]  # the caller's frame is untouched


def test_write_then_read_round_trips(tmp_path):
    df = pd.DataFrame({"id": ["=HYPERLINK(\"http://x\")", "'q", "-7", "ok"], "v": [-1, 2, 3, 4]})
    write_csv(tmp_path / "f.csv", df)
    assert _cells(tmp_path / "f.csv") == ["id", "v", "'=HYPERLINK(\"http://x\")", "-1", "''q", "2", "'-7", "3", "ok", "4"]
    back = read_csv(tmp_path / "f.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(back, df)


def _cells(path):
    """Every cell of a CSV as the spreadsheet sees it (no pandas type inference)."""
    import csv

    with open(path, newline="") as f:
        return [c for row in csv.reader(f) for c in row]


def test_run_csvs_and_predict_output_escape_hostile_names(tmp_path, capsys):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(HOSTILE):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            px = np.clip(np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200)][k]) + rng.normal(0, 30, (32, 32, 3)), 0, 255)
            Image.fromarray(px.astype(np.uint8)).save(root / cls / (HOSTILE_FILE if i == 0 else f"{i}.png"))
    run = tmp_path / "run"
    assert main(["detect", "--data", str(root), "--out", str(run), *TINY]) == 0
    for name in ("label_issues.csv", "labels.csv"):
        cells = _cells(run / name)
        dangerous = [c for c in cells if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not _is_number(c))]
        assert dangerous == [], (name, dangerous)
        assert "'=cmd" in cells and "'=cmd/" + HOSTILE_FILE in cells
    # read back by noisyft: raw names again (the report finds its images by id)
    from noisyft.report.embedding import rebuild_train
    from noisyft.report.html import load_run

    view = load_run(run)
    assert set(view.issues["given_class"]) == set(HOSTILE)
    train = rebuild_train(view.config, view.labels)  # ids compared with labels.csv: must match the raw names
    assert "=cmd/" + HOSTILE_FILE in train.ids
    # the finished-run shortcut returns raw names too
    from noisyft import api

    again = api.detect(data=str(root), out=str(run), backbone="test_efficientnet", pretrained=False, image_size=32,
                       epochs_lp=2, batch_size=16, num_workers=0, progress=False, seed=0)
    assert "=cmd/" + HOSTILE_FILE in set(again["id"])
    # predict --output and predict to stdout
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--data", str(root), "--output", str(out), "--num-workers", "0"]) == 0
    cells = _cells(out)
    assert "'@at/" + HOSTILE_FILE in cells and not any(c.startswith(("=", "+", "@")) for c in cells)
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--data", str(root), "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "'+sum/" + HOSTILE_FILE in printed and "\n+sum/" not in printed


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
