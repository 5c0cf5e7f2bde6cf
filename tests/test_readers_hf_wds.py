"""The ``hf:`` (Hugging Face datasets) and ``wds:`` (WebDataset shards) readers: where they look, what they find, and
one-line errors naming the file, sample or row. The end-to-end ``fit`` of each is in test_every_dataset.py."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from noisyft.data import load_data
from noisyft.data.datasets import open_dataset
from noisyft.data.readers import wds
from noisyft.errors import UserError
from tests.dataset_layouts import (HF_CLASSES, WDS_CLASSES, hf_splits, jpeg_bytes, write_hf, write_tar,
                                   write_wds)


def _pixels(data, i):
    return np.asarray(data.source.load(i))


# --- hf ------------------------------------------------------------------------


def test_hf_save_to_disk_finds_columns_by_type_and_reads_rows(tmp_path):
    spec, _ = write_hf(tmp_path)
    splits = open_dataset(spec)
    assert splits.train.classes == HF_CLASSES and len(splits.train) == 12 and len(splits.test) == 6
    assert splits.train.labels.tolist() == [c for c in range(3) for _ in range(4)]
    assert splits.train.ids[:2] == ["train/0", "train/1"] and splits.test.ids[0] == "test/0"
    assert splits.info["image_column"] == "img" and splits.info["test_split"] == "test"
    means = [_pixels(splits.train, i).mean() for i in (0, 11)]
    assert means[0] < 80 < 180 < means[1]  # class 0 is dark, class 2 bright: the right rows come back
    again = open_dataset(spec)
    assert again.train.source.fingerprint() == splits.train.source.fingerprint()
    assert splits.test.source.fingerprint() != splits.train.source.fingerprint()


def test_hf_split_suffix_and_options(tmp_path):
    spec, _ = write_hf(tmp_path)
    splits = open_dataset(f"{spec}:test?test=train")  # train on the test split, test on train
    assert (len(splits.train), len(splits.test)) == (6, 12)
    with pytest.raises(UserError, match=r"no split 'nope'.*splits: train, test"):
        open_dataset(f"{spec}:nope")
    with pytest.raises(UserError, match=r"no column 'pic' \(image\); columns: idx, img, fine_label"):
        open_dataset(f"{spec}?image=pic")
    with pytest.raises(UserError, match=r"unknown option 'colour'"):
        open_dataset(f"{spec}?colour=red")


def test_hf_integer_label_column_named_by_option(tmp_path):
    """label=COL on a plain integer column: the ids are the class names."""
    spec, _ = write_hf(tmp_path)
    splits = open_dataset(f"{spec}?label=idx")
    assert splits.train.classes == [str(k) for k in range(12)] and splits.train.labels.tolist() == list(range(12))


def test_hf_parquet_folder(tmp_path):
    d = tmp_path / "pq" / "data"
    d.mkdir(parents=True)
    for split, data in hf_splits(2, 1).items():
        data.to_parquet(str(d / f"{split}-00000-of-00001.parquet"))
    splits = load_data(f"hf:{tmp_path / 'pq'}")
    assert (len(splits.train), len(splits.test), splits.train.classes) == (6, 3, HF_CLASSES)
    assert _pixels(splits.train, 5).mean() > 180


def test_hf_bad_label_names_the_row(tmp_path):
    import datasets

    dd = hf_splits(2, 1)
    dd["test"] = dd["test"].cast_column("fine_label", datasets.Value("int64")).map(
        lambda r, i: {"fine_label": -1 if i == 2 else r["fine_label"]}, with_indices=True)
    dd.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(UserError, match=r"\[test\] row 2: label -1 in column 'fine_label' is not one of the 3 classes"):
        open_dataset(f"hf:{tmp_path / 'd'}?label=fine_label")


def test_hf_no_image_column_and_offline_hub_and_missing_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(UserError, match=r"no Image column for the images; name it with \?image=COL"):
        open_dataset(f"hf:{tmp_path / 'noimg'}")
    with pytest.raises(UserError, match=r"not a local folder and the Hugging Face Hub cannot give it") as e:
        open_dataset("hf:someone/not-a-dataset")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"not found"):
        open_dataset(f"hf:{tmp_path / 'missing'}")


def test_hf_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ImportError
    with pytest.raises(UserError, match=r"needs the 'datasets' package: pip install 'noisyft\[hf\]'"):
        open_dataset(f"hf:{tmp_path}")


# --- wds -----------------------------------------------------------------------


def test_brace_expansion():
    assert wds.expand_braces("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert wds.expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert wds.expand_braces("plain.tar") == ["plain.tar"]


def test_wds_reads_shards_through_a_cached_index(tmp_path, monkeypatch):
    spec, _ = write_wds(tmp_path / "w")
    splits = open_dataset(spec)
    assert splits.train.classes == WDS_CLASSES and (len(splits.train), len(splits.test)) == (12, 6)
    assert splits.train.labels.tolist() == [c for c in range(3) for _ in range(4)]  # .cls ids and .json names
    assert splits.train.ids[0] == "train-000000.tar/s00000" and splits.train.ids[-1] == "train-000001.tar/s00011"
    assert _pixels(splits.train, 0).mean() < 80 < 180 < _pixels(splits.train, 11).mean()
    assert _pixels(splits.test, 5).mean() > 180  # PNG members too
    monkeypatch.setattr(wds, "scan_shard", lambda shard: pytest.fail(f"{shard} scanned again"))
    again = open_dataset(spec)  # every shard's index comes from the cache
    assert again.train.source.fingerprint() == splits.train.source.fingerprint()


def test_wds_index_is_rebuilt_when_a_shard_changes(tmp_path):
    spec, _ = write_wds(tmp_path / "w")
    open_dataset(spec)
    rng = np.random.default_rng(0)
    write_tar(tmp_path / "w" / "test-000000.tar", [("a.jpg", jpeg_bytes(0, 3, rng)), ("a.cls", b"0")])
    assert len(open_dataset(spec).test) == 1


@pytest.mark.parametrize("members, error", [
    ([("a.jpg", None), ("a.cls", b"7")], r"test-000000.tar: sample a: unknown class id 7 \(ids are 0..2\)"),
    ([("a.cls", b"1")], r"test-000000.tar: sample a \(member a.cls\) has no image member"),
    ([("a.jpg", None)], r"test-000000.tar: sample a has no .cls or .json label member"),
    ([("a.jpg", None), ("a.json", b"{oops")], r"test-000000.tar: member a.json: not valid JSON"),
    ([("a.jpg", None), ("a.cls", b"kiwi")], r"test-000000.tar: sample a: label 'kiwi' is not a class id"),
])
def test_wds_bad_shards_name_the_shard_and_sample(tmp_path, members, error):
    spec, _ = write_wds(tmp_path / "w")
    rng = np.random.default_rng(0)
    write_tar(tmp_path / "w" / "test-000000.tar", [(n, jpeg_bytes(0, 3, rng) if d is None else d) for n, d in members])
    with pytest.raises(UserError, match=error) as e:
        open_dataset(spec)
    assert "\n" not in str(e.value)


def test_wds_glob_pattern_with_a_question_mark(tmp_path):
    write_wds(tmp_path / "w")
    splits = open_dataset(f"wds:{tmp_path}/w/train-00000?.tar?test={tmp_path}/w/test-*.tar")
    assert (len(splits.train), len(splits.test)) == (12, 6)
    assert len(open_dataset(f"wds:{tmp_path}/w/train-00000?.tar").train) == 12


def test_wds_missing_shard_and_compressed_shard(tmp_path):
    write_wds(tmp_path / "w")
    with pytest.raises(UserError, match=r"shard .*train-000002.tar not found \(pattern .* names 3 shard\(s\)\)"):
        open_dataset(f"wds:{tmp_path}/w/train-{{000000..000002}}.tar")
    (tmp_path / "w" / "x.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match=r"compressed; random access needs plain .tar"):
        open_dataset(f"wds:{tmp_path}/w/x.tar.gz")


def test_wds_class_names_from_json_or_the_ids(tmp_path):
    spec, _ = write_wds(tmp_path / "w")
    (tmp_path / "w" / "classes.txt").unlink()
    with pytest.raises(UserError, match=r"sample s00006: label 'pear' is not a class id"):  # the .json shard names classes
        open_dataset(spec)
    (tmp_path / "w" / "classes.json").write_text(json.dumps({"plum": 2, "apple": 0, "pear": 1}))
    assert open_dataset(spec).train.classes == WDS_CLASSES
    only_ids = open_dataset(f"wds:{tmp_path}/w/train-000000.tar")
    (tmp_path / "w" / "classes.json").unlink()
    assert only_ids.train.classes == WDS_CLASSES
    assert open_dataset(f"wds:{tmp_path}/w/train-000000.tar").train.classes == ["0", "1"]
