"""``predict`` on unlabelled images: flat folders, one folder, deep trees, zips, files and lists of files."""
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from noisyft import api
from noisyft.cli import main
from noisyft.errors import UserError
from tests.conftest import write_tree

TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, epochs_lp=2, batch_size=16, num_workers=0,
            progress=False)
COLUMNS = ["id", "predicted_label", "predicted_class", "confidence"]


@pytest.fixture(scope="module")
def run_and_photos(tmp_path_factory):
    base = tmp_path_factory.mktemp("pred")
    write_tree(base / "train", 6)
    res = api.fit(data=str(base / "train"), out=str(base / "run"), epochs_fft=0, test_fraction=0.0, **TINY)
    photos = base / "photos"  # flat: no class folders
    photos.mkdir()
    for p in sorted((base / "train").rglob("00[01].png")):
        shutil.copy(p, photos / f"{p.parent.name}-{p.name}")
    return res.run_dir, base, photos


def _predict(run, data, **kw):
    return api.predict(run, data, num_workers=0, progress=False, **kw)


def test_flat_folder(run_and_photos):
    run, _, photos = run_and_photos
    df = _predict(run, str(photos))
    assert list(df.columns) == COLUMNS and len(df) == 6
    assert sorted(df["id"]) == sorted(p.name for p in photos.iterdir())
    assert set(df["predicted_class"]) <= {"red", "green", "blue"} and df["confidence"].between(0, 1).all()


def test_single_folder_and_deep_tree(run_and_photos):
    run, base, photos = run_and_photos
    one = base / "one" / "only"
    shutil.copytree(photos, one)
    df = _predict(run, str(base / "one"))
    assert len(df) == 6 and all(i.startswith("only/") for i in df["id"])
    deep = base / "deep" / "a" / "b" / "c"
    shutil.copytree(photos, deep)
    (base / "deep" / "top.png").write_bytes((photos / "red-000.png").read_bytes())
    df = _predict(run, str(base / "deep"))
    assert len(df) == 7 and "a/b/c/red-000.png" in set(df["id"]) and "top.png" in set(df["id"])


def test_zip_file_list_and_several_inputs(run_and_photos):
    run, base, photos = run_and_photos
    flat = _predict(run, str(photos)).set_index("id")
    z = base / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(photos.iterdir()):
            zf.write(p, p.name)
    dz = _predict(run, str(z)).set_index("id")
    pd.testing.assert_frame_equal(dz.sort_index(), flat.sort_index())
    one = _predict(run, str(photos / "blue-001.png"))
    assert list(one["id"]) == [str(photos / "blue-001.png")]
    assert one["predicted_class"][0] == flat.loc["blue-001.png", "predicted_class"]
    listing = base / "list.txt"
    listing.write_text(f"# my photos\nphotos/red-000.png\n\n{photos / 'green-001.png'}\n")
    dl = _predict(run, str(listing))
    assert list(dl["id"]) == ["photos/red-000.png", str(photos / "green-001.png")]
    assert list(dl["predicted_class"]) == [flat.loc["red-000.png", "predicted_class"],
                                           flat.loc["green-001.png", "predicted_class"]]
    many = _predict(run, [str(photos), str(z), str(base / "train" / "red" / "005.png")], top_k=2)
    assert len(many) == 13 and many["id"].is_unique
    assert f"{photos.as_posix()}/red-000.png" in set(many["id"]) and f"{z}:red-000.png" in set(many["id"])
    assert {"top2_class", "top2_confidence"} <= set(many.columns)
    assert (many["top2_confidence"] <= many["confidence"]).all() and (many["top2_class"] != many["predicted_class"]).all()


def test_bad_list_line_is_one_line_naming_it(run_and_photos):
    run, base, photos = run_and_photos
    listing = base / "bad.txt"
    listing.write_text("photos/red-000.png\nphotos/missing.png\n")
    with pytest.raises(UserError, match=r"bad.txt line 2: photos/missing.png"):
        _predict(run, str(listing))


def test_cli_predict_flat_folder_and_several_paths(run_and_photos, tmp_path):
    run, base, photos = run_and_photos
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(run), "--data", str(photos), "--output", str(out), "--num-workers", "0"]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and len(df) == 6
    assert main(["predict", "--run", str(run), "--data", str(photos / "red-000.png"), str(photos / "red-001.png"),
                 "--output", str(out), "--num-workers", "0", "--top-k", "3"]) == 0
    df = pd.read_csv(out)
    assert len(df) == 2 and "top3_class" in df and np.allclose(
        df[["confidence", "top2_confidence", "top3_confidence"]].sum(1), 1, atol=1e-5)
