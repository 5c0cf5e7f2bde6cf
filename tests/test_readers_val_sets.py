"""The published extra evaluation sets: Clothing1M's clean validation keys as the run's validation set
(``clothing1m:PATH?val=clean``) and WebVision's ILSVRC2012 validation images as a second test set."""
from __future__ import annotations

import json

import pytest

from noisyft import api
from noisyft.data import load_data
from noisyft.errors import UserError
from tests.dataset_layouts import write_clothing1m, write_imagenet_val, write_webvision

TINY = dict(backbone="test_efficientnet", pretrained=False, image_size=32, batch_size=32, num_workers=0, progress=False,
            lp_optim="adamw:1e-2:1e-5", method="ce-lp", epochs_lp=2, seed=0)


def test_clothing1m_clean_val_is_the_validation_set(tmp_path):
    spec, _ = write_clothing1m(tmp_path / "c")
    splits = load_data(f"{spec}?val=clean")
    assert splits.val is not None and len(splits.val) == 3  # one clean validation key per class
    assert splits.val.ids[0].startswith("images/") and splits.info["val_from"] == "clean_val_key_list.txt"
    assert load_data(spec).val is None  # only when asked
    res = api.fit(data=f"{spec}?val=clean", out=str(tmp_path / "run"), **TINY)
    metrics = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc" in m for m in metrics if "test_acc" in m)
    assert res.summary["test_acc_rule"] == "val-selected" and res.summary["n_train"] == 12  # nothing carved from train
    with pytest.raises(UserError, match=r"--val-fraction 0.2 and the dataset's own validation set .* both given"):
        api.fit(data=f"{spec}?val=clean", out=str(tmp_path / "run2"), val_fraction=0.2, **TINY)


def test_clothing1m_val_needs_its_key_list(tmp_path):
    spec, _ = write_clothing1m(tmp_path / "c")
    (tmp_path / "c" / "clean_val_key_list.txt").unlink()
    with pytest.raises(UserError, match=r"clean_val_key_list.txt not found"):
        load_data(f"{spec}?val=clean")
    with pytest.raises(UserError, match=r"val=noisy is not an option value"):
        load_data(f"{spec}?val=noisy")


def test_webvision_imagenet_val_is_a_second_test_set(tmp_path):
    spec, want = write_webvision(tmp_path)
    assert load_data(spec).extra_tests == {}
    write_imagenet_val(tmp_path)
    splits = load_data(spec)
    imnet = splits.extra_tests["imagenet"]
    assert len(imnet) == 4 and imnet.labels.tolist() == [0, 0, 1, 1]  # class 50 is not in mini-WebVision
    assert imnet.classes == want["classes"] and splits.info["test_imagenet_images"] == 4
    res = api.fit(data=spec, out=str(tmp_path / "run"), **TINY)
    assert 0 <= res.summary["test_acc_imagenet"] <= 1 and res.summary["n_test_imagenet"] == 4
    assert json.loads((res.run_dir / "summary.json").read_text())["test_acc_imagenet"] == res.summary["test_acc_imagenet"]


def test_webvision_imagenet_folder_option_and_bad_wnid(tmp_path):
    spec, _ = write_webvision(tmp_path)
    folder = write_imagenet_val(tmp_path)
    moved = tmp_path / "ilsvrc-val"
    folder.rename(moved)
    assert len(load_data(f"{spec}?imagenet={moved}").extra_tests["imagenet"]) == 4
    (moved / "n99999999").mkdir()
    with pytest.raises(UserError, match=r"n99999999 is not a wnid listed in .*synsets.txt"):
        load_data(f"{spec}?imagenet={moved}")
    with pytest.raises(UserError, match=r"imagenet=.*nowhere: not a folder"):
        load_data(f"{spec}?imagenet={tmp_path / 'nowhere'}")
