"""Official-layout readers (Clothing1M, Tiny-ImageNet, CUB-200-2011, Stanford Cars, WebVision): what they read, and
bad layouts as one-line errors naming the file and line.

The end-to-end runs of each reader are in ``test_every_dataset.py`` (its table names every
registered dataset); here each case breaks a fresh copy of a tiny generated tree one way.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from noisyft.data import load_data
from noisyft.data.datasets import open_dataset
from noisyft.errors import UserError
from tests import dataset_layouts as layouts


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Each reader's tiny tree, written once: name → root."""
    base = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, write in (("clothing1m", layouts.write_clothing1m), ("tiny-imagenet", layouts.write_tiny_imagenet),
                        ("cub200", layouts.write_cub200), ("stanford-cars", layouts.write_stanford_cars),
                        ("webvision", layouts.write_webvision)):
        write(base / name)
        out[name] = base / name
    return out


@pytest.fixture
def fresh(originals, tmp_path):
    """A private copy of a reader's tree to break: ``fresh("clothing1m")`` → its root."""
    def copy(name: str) -> Path:
        shutil.copytree(originals[name], tmp_path / name)
        return tmp_path / name
    return copy


def one_line_error(spec: str) -> str:
    with pytest.raises(UserError) as e:
        open_dataset(spec)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _edit_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


# --- Clothing1M --------------------------------------------------------------------


def test_clothing1m_trains_on_noisy_keys_and_tests_on_clean_test_keys(originals):
    root = originals["clothing1m"]
    splits = load_data(f"clothing1m:{root}")
    keys = (root / "noisy_train_key_list.txt").read_text().split()
    assert splits.train.ids == keys and splits.train.true_labels is None
    assert splits.train.classes == layouts.CLOTHING_CLASSES
    assert (splits.train.labels == np.repeat(np.arange(3), 4)).all()
    assert splits.test.ids == (root / "clean_test_key_list.txt").read_text().split()
    assert (splits.test.true_labels == np.repeat(np.arange(3), 2)).all()
    assert splits.info["train_with_clean_label"] == 1 and splits.info["clean_val_keys"] == 3
    assert np.asarray(splits.train.source.load(0)).shape == (24, 24, 3)


def test_clothing1m_bad_layouts(fresh):
    root = fresh("clothing1m")
    spec = f"clothing1m:{root}"
    (root / "noisy_label_kv.txt").rename(root / "kv.bak")
    assert one_line_error(spec) == (f"clothing1m: {root / 'noisy_label_kv.txt'} not found; Clothing1M is distributed "
                                    f"by its authors on request (github.com/Cysu/noisy_label)")
    (root / "kv.bak").rename(root / "noisy_label_kv.txt")
    kv = root / "noisy_label_kv.txt"
    first_key = kv.read_text().split()[0]
    good = kv.read_text()
    _edit_line(kv, 3, f"{kv.read_text().splitlines()[2].split()[0]} 14")
    assert one_line_error(spec).startswith(f"{kv}:3: unknown class id 14 (category_names_eng.txt names 3 classes")
    _edit_line(kv, 3, "justakey.jpg")
    assert one_line_error(spec) == f"{kv}:3: expected 'KEY LABEL', got 'justakey.jpg'"
    _edit_line(kv, 3, "../../etc/x.jpg 1")
    assert "is absolute or leaves the dataset folder" in one_line_error(spec)
    kv.write_text(good)
    keys = root / "noisy_train_key_list.txt"
    (root / keys.read_text().split()[1]).unlink()
    msg = one_line_error(spec)
    assert msg.startswith(f"{keys}:2: image images/") and f"not found under {root}" in msg
    _edit_line(keys, 2, "images/9/99/nolabel.jpg")
    assert one_line_error(spec) == f"{keys}:2: key images/9/99/nolabel.jpg has no label in noisy_label_kv.txt"
    _edit_line(keys, 2, first_key)
    assert one_line_error(spec) == f"{keys}:2: key {first_key} is listed twice"
    assert "needs a path" in one_line_error("clothing1m")


# --- Tiny-ImageNet -----------------------------------------------------------------


def test_tiny_imagenet_reads_train_and_val_in_sorted_wnid_order(originals):
    root = originals["tiny-imagenet"]
    splits = load_data(f"tiny-imagenet:{root}")
    assert splits.train.classes == ["goldfish", "European fire salamander", "Chihuahua"]  # n01443537 < n01629819 < n02085620
    assert splits.train.ids[0] == "train/n01443537/images/n01443537_0.JPEG"
    assert (splits.train.labels == np.repeat(np.arange(3), 4)).all()
    assert splits.test.ids[:2] == ["val/images/val_0.JPEG", "val/images/val_1.JPEG"]
    assert (splits.test.labels == np.tile(np.arange(3), 2)).all()
    assert splits.info["wnids"] == sorted(layouts.TINY_WNIDS)
    assert splits.train.source.root == root / "tiny-imagenet-200"  # PATH or PATH/tiny-imagenet-200


def test_tiny_imagenet_bad_layouts(fresh):
    top = fresh("tiny-imagenet")
    root = top / "tiny-imagenet-200"
    spec = f"tiny-imagenet:{root}"
    (root / "wnids.txt").rename(root / "w.bak")
    assert one_line_error(f"tiny-imagenet:{top}") == (f"tiny-imagenet: {top / 'wnids.txt'} not found; Tiny-ImageNet is "
                                                      f"published at http://cs231n.stanford.edu/tiny-imagenet-200.zip")
    (root / "w.bak").rename(root / "wnids.txt")
    ann = root / "val" / "val_annotations.txt"
    good = ann.read_text()
    _edit_line(ann, 2, "val_1.JPEG\tn99999999\t0\t0\t1\t1")
    assert one_line_error(spec) == f"{ann}:2: unknown class n99999999 (not in wnids.txt)"
    _edit_line(ann, 2, "val_1.JPEG")
    assert one_line_error(spec) == f"{ann}:2: expected 'FILE WNID ...', got 'val_1.JPEG'"
    ann.write_text(good)
    (root / "val" / "images" / "val_3.JPEG").unlink()
    assert one_line_error(spec) == f"{ann}:4: image val/images/val_3.JPEG not found under {root}"
    shutil.rmtree(root / "train" / "n01629819")
    assert one_line_error(spec) == (f"{root / 'wnids.txt'}:3: class n01629819 has no training images in "
                                    f"{root / 'train/n01629819/images'}")


# --- CUB-200-2011 ------------------------------------------------------------------


def test_cub200_uses_the_official_split_and_folder_names(originals):
    root = originals["cub200"]
    splits = load_data(f"cub200:{root}")
    assert splits.train.classes == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert (len(splits.train), len(splits.test)) == (12, 6)
    assert splits.train.ids[0] == "images/001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg"
    assert splits.test.ids[0] == "images/001.Black_footed_Albatross/Black_footed_Albatross_0002_3.jpg"
    assert (splits.test.true_labels == np.repeat(np.arange(3), 2)).all()


def test_cub200_bad_layouts(fresh):
    root = fresh("cub200") / "CUB_200_2011"
    spec = f"cub200:{root.parent}"
    (root / "train_test_split.txt").rename(root / "s.bak")
    assert one_line_error(spec) == (f"cub200: {root / 'train_test_split.txt'} not found; CUB-200-2011 is published at "
                                    f"https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)")
    (root / "s.bak").rename(root / "train_test_split.txt")
    labels = root / "image_class_labels.txt"
    good = labels.read_text()
    _edit_line(labels, 5, "5 201")
    assert one_line_error(spec) == f"{labels}:5: unknown class id 201 (not in classes.txt)"
    _edit_line(labels, 5, "5 one")
    assert one_line_error(spec) == f"{labels}:5: class id 'one' is not an integer"
    _edit_line(labels, 5, "4 1")
    assert one_line_error(spec) == f"{labels}:5: id 4 repeats line 4"
    labels.write_text(good)
    images = root / "images.txt"
    rel = images.read_text().splitlines()[6].split()[1]
    (root / "images" / rel).unlink()
    assert one_line_error(spec) == f"{images}:7: image {rel} not found under {root / 'images'}"


# --- Stanford Cars -----------------------------------------------------------------


def test_stanford_cars_reads_the_devkit_annotations(originals):
    root = originals["stanford-cars"]
    splits = load_data(f"stanford-cars:{root}")
    assert splits.train.classes == layouts.CARS_CLASSES
    assert splits.train.ids[:2] == ["cars_train/00001.jpg", "cars_train/00002.jpg"]
    assert (splits.train.labels == np.tile(np.arange(3), 4)).all()
    assert splits.test.ids[-1] == "cars_test/00006.jpg" and (splits.test.true_labels == np.tile(np.arange(3), 2)).all()


def test_stanford_cars_bad_layouts(fresh):
    import scipy.io

    root = fresh("stanford-cars") / "stanford_cars"
    spec = f"stanford-cars:{root}"
    test_annos = root / "cars_test_annos_withlabels.mat"
    test_annos.rename(root / "t.bak")
    msg = one_line_error(spec)
    assert msg.startswith(f"stanford-cars: {test_annos} not found; Stanford Cars is published at https://ai.stanford.edu")
    (root / "t.bak").rename(root / "devkit" / test_annos.name)  # the devkit folder is looked in too
    assert len(load_data(spec).test) == 6
    train_annos = root / "devkit" / "cars_train_annos.mat"
    rows = [(f"{k + 1:05d}.jpg", k % 3 + 1) for k in range(12)]
    scipy.io.savemat(train_annos, {"annotations": layouts.cars_annotations(rows[:4] + [("00005.jpg", 197)] + rows[5:])})
    assert one_line_error(spec) == f"{train_annos}: annotation 5: unknown class id 197 (cars_meta.mat names 3 classes, ids 1..3)"
    scipy.io.savemat(train_annos, {"annotations": layouts.cars_annotations(rows + [("09999.jpg", 1)])})
    assert one_line_error(spec) == f"{train_annos}: annotation 13: image cars_train/09999.jpg not found under {root}"
    scipy.io.savemat(train_annos, {"labels": np.arange(3)})
    assert one_line_error(spec) == f"stanford-cars: {train_annos} has no 'annotations' (it holds: labels); is it the devkit file?"
    train_annos.write_bytes(b"not a mat file")
    assert one_line_error(spec).startswith(f"stanford-cars: cannot read {train_annos} as a MATLAB file")


# --- WebVision ---------------------------------------------------------------------


def test_webvision_mini_keeps_the_first_50_google_classes_and_full_adds_flickr(originals):
    root = originals["webvision"]
    mini = load_data(f"webvision:{root}")
    assert mini.train.classes == [f"class{c}" for c in range(50)] and mini.train.true_labels is None
    assert len(mini.train) == 100 and not any(i.startswith("flickr/") for i in mini.train.ids)
    assert mini.train.ids[:2] == ["google/q0001/000000.jpg", "google/q0001/000001.jpg"]
    assert mini.test.ids[0] == "val_images_256/val000000.jpg" and (mini.test.true_labels == np.arange(50)).all()
    full = load_data(f"webvision-full:{root}")
    assert full.train.num_classes == 52 and len(full.train) == 107 and full.train.ids[-1] == "flickr/q0052/000000.jpg"
    assert full.info["train_lists"] == ["train_filelist_google.txt", "train_filelist_flickr.txt"]


def test_webvision_bad_layouts(fresh):
    root = fresh("webvision") / "webvision"
    spec = f"webvision:{root}"
    (root / "info" / "val_filelist.txt").rename(root / "v.bak")
    assert one_line_error(spec) == (f"webvision: {root / 'info/val_filelist.txt'} not found; WebVision 1.0 is published "
                                    f"at https://data.vision.ee.ethz.ch/cvl/webvision/dataset2017.html")
    (root / "v.bak").rename(root / "info" / "val_filelist.txt")
    google = root / "info" / "train_filelist_google.txt"
    good = google.read_text()
    _edit_line(google, 3, "google/q0002/000000.jpg 52")
    assert one_line_error(spec) == f"{google}:3: unknown class id 52 (ids are 0..51)"
    _edit_line(google, 3, "google/q0002/000000.jpg")
    assert one_line_error(spec) == f"{google}:3: expected 'IMAGE LABEL', got 'google/q0002/000000.jpg'"
    google.write_text(good)
    (root / "google/q0002/000001.jpg").unlink()
    assert one_line_error(spec) == f"{google}:4: image google/q0002/000001.jpg not found under {root}"
    layouts.write_image(root / "google/q0002/000001.jpg", 1, 52, np.random.default_rng(0))
    (root / "google/q0052/000001.jpg").unlink()  # a class mini-WebVision leaves out: not needed
    assert len(load_data(spec).train) == 100
    shutil.rmtree(root / "val_images_256")
    assert one_line_error(spec).startswith(f"webvision: {root / 'val_images_256'} not found")
