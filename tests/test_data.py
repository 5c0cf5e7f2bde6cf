"""Data loading: trees, zips, sources, labels CSV, named datasets, splits."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisyft.data import (DataSplits, TorchImageDataset, load_data, stratified_holdout,
                          stratified_subset)
from noisyft.data.datasets import DEMO_ZIP, read_idx
from noisyft.data.labels_csv import id_aliases
from noisyft.data.sources import ArraySource, FolderSource, ZipSource, find_bad_images
from noisyft.errors import UserError

REPO = Path(__file__).resolve().parent.parent
CIFAR_JPEG_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


# ---------------------------------------------------------------- helpers


def _img_bytes(color, fmt="PNG", size=(6, 5)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def make_tree(root: Path, counts: dict[str, int], fmt="PNG") -> Path:
    """root/<class>/<k>.png with a solid class colour."""
    ext = ".png" if fmt == "PNG" else ".jpg"
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            (root / cls / f"{k:02d}{ext}").write_bytes(_img_bytes(COLORS[cls], fmt))
    return root


def zip_dir(src: Path, dest: Path, lead: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, lead + p.relative_to(src).as_posix())
    return dest


def to_rgb(im):  # module level so DataLoader workers can pickle it
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "pets", {"cat": 3, "dog": 2})


@pytest.fixture
def split_tree(tmp_path) -> Path:
    root = tmp_path / "ds"
    make_tree(root / "train", {"cat": 6, "dog": 4, "emu": 2})
    make_tree(root / "test", {"cat": 2, "dog": 1, "emu": 1})
    return root


# ---------------------------------------------------------------- trees and zips


def test_folder_tree_classes_ids_labels(tree):
    (tree / "notes.txt").write_text("not an image")
    s = load_data(str(tree), test_fraction=0)
    assert s.train.classes == ["cat", "dog"]
    assert s.train.ids == ["cat/00.png", "cat/01.png", "cat/02.png", "dog/00.png", "dog/01.png"]
    assert s.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert s.train.true_labels.tolist() == [0, 0, 0, 1, 1]
    assert s.test is None and s.info["test_from"] == "none"
    im = s.train.source.load(4)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == COLORS["dog"]


def test_split_tree_detects_train_and_test(split_tree):
    s = load_data(str(split_tree))
    assert (len(s.train), len(s.test)) == (12, 4)
    assert s.info["test_from"] == "split" and s.info["layout"] == "train/test"
    assert s.test.ids[0] == "test/cat/00.png" and s.train.ids[-1] == "train/emu/01.png"
    assert s.test.classes == ["cat", "dog", "emu"] and s.test.labels.tolist() == [0, 0, 1, 2]


def test_zip_with_leading_folder(split_tree, tmp_path):
    z = zip_dir(split_tree, tmp_path / "ds.zip", lead="cifar/")
    s = load_data(str(z))
    assert s.name == "ds" and isinstance(s.train.source, ZipSource)
    assert s.train.ids[0] == "cifar/train/cat/00.png"
    assert (len(s.train), len(s.test), s.train.classes) == (12, 4, ["cat", "dog", "emu"])
    assert s.test.source.load(3).getpixel((1, 1)) == COLORS["emu"]


def test_flat_tree_without_csv_is_an_error(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(_img_bytes(COLORS["cat"]))
    with pytest.raises(UserError, match=r"flat has no <class>/<file> folders.*labels CSV"):
        load_data(str(tmp_path / "flat"))


def test_separate_test_tree_is_aligned_by_class_name(tree, tmp_path):
    t = make_tree(tmp_path / "other", {"dog": 2})
    s = load_data(str(tree), test=str(t))
    assert s.test.classes == ["cat", "dog"] and s.test.labels.tolist() == [1, 1]
    assert s.info["test_from"].startswith("tree ")
    bad = make_tree(tmp_path / "bad", {"emu": 1})
    with pytest.raises(UserError, match=r"emu in .*bad are not training classes"):
        load_data(str(tree), test=str(bad))


# ---------------------------------------------------------------- sources


def test_folder_fingerprint_changes_only_with_content(tree):
    src = FolderSource(tree, ["cat/00.png", "dog/00.png"])
    fp = src.fingerprint()
    assert fp == FolderSource(tree, ["cat/00.png", "dog/00.png"]).fingerprint()
    assert fp != FolderSource(tree, ["dog/00.png", "cat/00.png"]).fingerprint()
    p = tree / "cat" / "00.png"
    st = p.stat()
    p.write_bytes(_img_bytes((1, 2, 3)))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert src.fingerprint() != fp


def test_zip_fingerprint_is_a_content_hash(tree, tmp_path):
    a = zip_dir(tree, tmp_path / "a.zip")
    b = zip_dir(tree, tmp_path / "b.zip")  # same content, rebuilt
    ids = ["cat/00.png", "dog/01.png"]
    assert ZipSource(a, ids).fingerprint() == ZipSource(b, ids).fingerprint()
    (tree / "dog" / "01.png").write_bytes(_img_bytes((9, 9, 9)))
    c = zip_dir(tree, tmp_path / "c.zip")
    assert ZipSource(c, ids).fingerprint() != ZipSource(a, ids).fingerprint()


def test_array_source_grey_to_rgb_and_fingerprint():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    src = ArraySource(x)
    im = src.load(1)
    assert src.ids == ["0", "1"] and im.mode == "RGB" and im.size == (4, 3)
    assert im.getpixel((1, 0)) == (13, 13, 13)
    y = x.copy()
    y[0, 0, 0] += 1
    assert src.fingerprint() == ArraySource(x.copy()).fingerprint() != ArraySource(y).fingerprint()


def test_zip_source_pickles_and_works_in_dataloader_workers(split_tree, tmp_path):
    z = zip_dir(split_tree, tmp_path / "ds.zip")
    s = load_data(str(z))
    s.train.source.load(0)  # opens the handle in this process
    clone = pickle.loads(pickle.dumps(s.train.source))
    assert clone.load(11).getpixel((0, 0)) == COLORS["emu"]
    loader = torch.utils.data.DataLoader(TorchImageDataset(s.train, to_rgb), batch_size=4, num_workers=2)
    labels, idx, colors = [], [], []
    for x, y, i in loader:
        labels += y.tolist()
        idx += i.tolist()
        colors += [tuple(v.tolist()) for v in x[:, 0, 0]]
    assert idx == list(range(12)) and labels == s.train.labels.tolist()
    assert colors == [COLORS[s.train.classes[k]] for k in labels]


def test_corrupt_image_error_names_file_and_skip_lists_it(tree, tmp_path):
    (tree / "cat" / "bad.png").write_bytes(b"\x89PNG not really")
    good = _img_bytes(COLORS["dog"], "JPEG")
    (tree / "dog" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    s = load_data(str(tree), test_fraction=0)
    k = s.train.ids.index("cat/bad.png")
    with pytest.raises(UserError, match=r"cannot read image .*pets/cat/bad\.png"):
        s.train.source.load(k)
    assert find_bad_images(s.train.source) == ["cat/bad.png", "dog/trunc.jpg"]
    s2 = load_data(str(tree), test_fraction=0, skip_bad_images=True)
    assert s2.info["skipped_images"] == ["cat/bad.png", "dog/trunc.jpg"]
    assert len(s2.train) == 5 and "cat/bad.png" not in s2.train.ids


def test_corrupt_zip_member_error_names_zip_and_member(tree, tmp_path):
    (tree / "cat" / "bad.png").write_bytes(b"garbage")
    z = zip_dir(tree, tmp_path / "p.zip")
    src = ZipSource(z, ["cat/bad.png"])
    with pytest.raises(UserError, match=r"cannot read image .*p\.zip:cat/bad\.png"):
        src.load(0)



def test_zip_members_read_stored_or_deflated_give_loads_pixels_and_a_bad_crc_is_named(tmp_path):
    """Stored members are sliced from a memory map (CRC checked), others go through zipfile; ``raw`` is ``load``'s pixels."""
    rng = np.random.default_rng(0)
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(photo, format="JPEG", quality=90)
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(zipfile.ZipInfo("a/stored.jpg"), photo.getvalue())  # ZIP_STORED
        zf.writestr("b/deflated.png", _img_bytes((1, 2, 3)), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("c/last.jpg"), photo.getvalue())
    src = ZipSource(z, ["a/stored.jpg", "b/deflated.png", "c/last.jpg"])
    for i in range(3):
        assert np.array_equal(src.raw(i), np.asarray(src.load(i)))
    assert src.raw(1)[0, 0].tolist() == [1, 2, 3] and src.raw(0).shape == (20, 30, 3)
    data = bytearray(z.read_bytes())
    k = data.index(photo.getvalue()) + 200
    data[k] ^= 0xFF  # one flipped byte inside the first stored member
    z.write_bytes(bytes(data))
    broken = ZipSource(z, src.ids)
    with pytest.raises(UserError, match=r"cannot read image .*m\.zip:a/stored\.jpg: Bad CRC-32"):
        broken.raw(0)
    assert np.array_equal(broken.raw(2), src.raw(2))


# ---------------------------------------------------------------- labels CSV


def test_csv_overrides_labels_and_defines_training_set(split_tree, tmp_path):
    csv = write_csv(tmp_path / "noisy.csv",
                    "label,path,extra\ndog,train/cat/00.png,x\n\n2,cat/01.png,y\ncat,train/dog/00.png,z\n")
    s = load_data(str(split_tree), labels_csv=str(csv))
    assert s.train.ids == ["train/cat/00.png", "train/cat/01.png", "train/dog/00.png"]
    assert s.train.labels.tolist() == [1, 2, 0] and s.train.true_labels is None
    assert s.info["not_in_csv"] == 9 and s.info["csv_rows"] == 3 and len(s.test) == 4
    t = load_data(str(split_tree), labels_csv=str(csv), folder_labels_are_true=True)
    assert t.train.true_labels.tolist() == [0, 0, 1]


def test_csv_order_does_not_change_the_training_set(tree, tmp_path):
    a = write_csv(tmp_path / "a.csv", "path,label\ncat/00.png,dog\ndog/01.png,cat\n")
    b = write_csv(tmp_path / "b.csv", "path,label\ndog/01.png,cat\ncat/00.png,dog\n")
    sa = load_data(str(tree), labels_csv=str(a), test_fraction=0)
    sb = load_data(str(tree), labels_csv=str(b), test_fraction=0)
    assert sa.train.ids == sb.train.ids and sa.train.source.fingerprint() == sb.train.source.fingerprint()


def test_csv_on_flat_folder_takes_classes_from_csv(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for n in "abcd":
        (flat / f"{n}.png").write_bytes(_img_bytes(COLORS["cat"]))
    csv = write_csv(tmp_path / "l.csv", "path,label\na.png,zebra\nb.png,ant\n./c.png,zebra\nd.png,ant\n")
    s = load_data(str(flat), labels_csv=str(csv), test_fraction=0)
    assert s.train.classes == ["ant", "zebra"] and s.train.labels.tolist() == [1, 0, 1, 0]
    ints = write_csv(tmp_path / "i.csv", "path,label\na.png,2\nb.png,0\n")
    assert load_data(str(flat), labels_csv=str(ints), test_fraction=0).train.classes == ["0", "1", "2"]
    with pytest.raises(UserError, match="no <class>/<file> folders"):
        load_data(str(flat), labels_csv=str(csv), folder_labels_are_true=True)


def test_csv_on_zip_with_one_folder_of_images(tmp_path):
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        for n in "abc":
            zf.writestr(f"photos/{n}.jpg", _img_bytes(COLORS["dog"], "JPEG"))
    csv = write_csv(tmp_path / "l.csv", "path,label\na.jpg,x\nphotos/b.jpg,y\nc.jpg,x\n")
    s = load_data(str(tmp_path / "photos.zip"), labels_csv=str(csv), test_fraction=0)
    assert s.train.classes == ["x", "y"] and s.train.ids == ["photos/a.jpg", "photos/b.jpg", "photos/c.jpg"]
    assert s.train.labels.tolist() == [0, 1, 0]


def test_dataset_name_wins_over_same_named_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "cifar10", {"cat": 1, "dog": 1})
    with pytest.raises(UserError, match="CIFAR-10 batches not found"):
        load_data("cifar10")
    assert load_data("./cifar10", test_fraction=0).train.classes == ["cat", "dog"]


CSV_ERRORS = [
    ("file,class\ncat/00.png,dog\n", r"bad\.csv: missing column\(s\) path,label; needs columns path,label, found: file,class"),
    ("path,lbl\ncat/00.png,dog\n", r"bad\.csv: missing column\(s\) label;.*found: path,lbl"),
    ("path,label\ncat/00.png,dgo\n", r"bad\.csv: row 1 \(line 2\): unknown class 'dgo'; did you mean dog"),
    ("path,label\ncat/00.png,cat\n\ncat/01.png,7\n", r"bad\.csv: row 2 \(line 4\): label index 7 out of range 0\.\.1"),
    ("path,label\ncat/00.png,cat\ncat/01.png,-1\n", r"bad\.csv: row 2 \(line 3\): label index -1 out of range"),
    ("path,label\ncat/00.png,cat\ndog/00.png,dog\ncat/00.png,dog\n",
     r"bad\.csv: row 3 \(line 4\): duplicate path 'cat/00.png' \(already given in row 1, line 2\)"),
    ("path,label\ncat/00.png,cat\ntrain/../cat/00.png,dog\n", r"bad\.csv: row 2 \(line 3\): .*'\.\.' and leaves"),
    ("path,label\n/etc/passwd.png,cat\n", r"bad\.csv: row 1 \(line 2\): absolute path '/etc/passwd\.png'"),
    ("path,label\ncat/00.png,cat\ncat/99.png,cat\n", r"bad\.csv: row 2 \(line 3\): 'cat/99\.png' is not a training image under .*pets"),
    ("path,label\nnotes.txt,cat\n", r"bad\.csv: row 1 \(line 2\): 'notes\.txt' is not a training image .*must end in"),
    ("path,label\ncat/00.png,\n", r"bad\.csv: row 1 \(line 2\): empty label"),
    ("", r"labels CSV bad\.csv is empty"),
    ("\n\n", r"labels CSV bad\.csv is empty"),
    ("path,label\n", r"labels CSV bad\.csv has a header but no data rows"),
]


@pytest.mark.parametrize("text,message", CSV_ERRORS)
def test_csv_errors_name_file_and_row(tree, tmp_path, text, message):
    csv = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(UserError, match=message):
        load_data(str(tree), labels_csv=str(csv), test_fraction=0)


def test_missing_csv_file(tree, tmp_path):
    with pytest.raises(UserError, match=r"labels CSV not found: .*nope\.csv"):
        load_data(str(tree), labels_csv=str(tmp_path / "nope.csv"))


def test_id_aliases_strip_only_shared_leading_folders():
    look = id_aliases(["top/train/a/1.png", "top/train/b/2.png"])
    assert look["top/train/a/1.png"] == look["train/a/1.png"] == look["a/1.png"] == 0
    assert "1.png" not in look


# ---------------------------------------------------------------- named datasets


def _write_cifar10(d: Path, n=4) -> np.ndarray:
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_x = []
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        all_x.append(x)
        batch = {b"data": x, b"labels": [k % 10 for k in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{k}".encode() for k in range(10)]}))
    return np.concatenate(all_x[:5])


def test_cifar10_reader_from_folder_and_tarball(tmp_path):
    x = _write_cifar10(tmp_path / "cifar-10-batches-py")
    s = load_data(f"cifar10:{tmp_path}")  # parent folder is accepted too
    assert (len(s.train), len(s.test), s.train.classes[:2]) == (20, 4, ["c0", "c1"])
    assert s.train.labels[:5].tolist() == [0, 1, 2, 3, 0] and (s.train.true_labels == s.train.labels).all()
    # image 5 pixel (row 0, col 1): channel planes of 1024 bytes, R first
    assert s.train.source.raw(5)[0, 1].tolist() == [x[5, 1], x[5, 1025], x[5, 2049]]
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    t = load_data(f"cifar10:{tgz}")
    assert t.train.source.fingerprint() == s.train.source.fingerprint()


def test_cifar100_reader(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        x = np.full((n, 3072), 7, dtype=np.uint8)
        (d / name).write_bytes(pickle.dumps({b"data": x, b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}))
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{k}".encode() for k in range(100)]}))
    s = load_data(f"cifar100:{d}")
    assert (len(s.train), len(s.test), s.train.num_classes, s.train.classes[5]) == (6, 3, 100, "f5")
    assert s.test.labels.tolist() == [0, 1, 2]


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reader(tmp_path):
    for split, n in (("train", 5), ("t10k", 2)):
        x = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 251
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(_idx(x))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(n) % 10))
    s = load_data(f"fashion-mnist:{tmp_path}")
    assert (len(s.train), len(s.test)) == (5, 2)
    assert s.train.classes[0] == "T-shirt/top" and s.train.classes[9] == "Ankle boot"
    assert s.train.labels.tolist() == [0, 1, 2, 3, 4]
    im = s.train.source.load(1)
    assert im.mode == "RGB" and im.size == (28, 28) and im.getpixel((3, 0)) == (787 % 251,) * 3
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").tolist() == [0, 1]


@pytest.mark.parametrize("spec,message", [
    ("{tmp}/nowhere/data.zip", r"data path not found: .*nowhere/data\.zip"),
    ("cifar10:{tmp}/nope", r"CIFAR-10 batches not found in .*nope.*cifar-10-python\.tar\.gz.*--data cifar10:"),
    ("cifar100:{tmp}/nope", r"CIFAR-100 batches not found in .*nope"),
    ("fashion-mnist:{tmp}", r"Fashion-MNIST file train-images-idx3-ubyte\.gz not found in .*dataset-fashion-mnist"),
    ("cifr10", r"unknown dataset 'cifr10'; did you mean cifar10"),
    ("folder", r"dataset 'folder' needs a path"),
])
def test_missing_data_messages(tmp_path, spec, message):
    with pytest.raises(UserError, match=message):
        load_data(spec.format(tmp=tmp_path))


def test_cifar10_without_meta_uses_standard_names(tmp_path):
    _write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "batches.meta").unlink()
    assert load_data(f"cifar10:{tmp_path / 'c'}").train.classes[:2] == ["airplane", "automobile"]


def test_cifar_missing_batch_file(tmp_path):
    _write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"data_batch_3 missing in .*c: re-extract"):
        load_data(f"cifar10:{tmp_path / 'c'}")


@pytest.mark.skipif(not DEMO_ZIP.exists(), reason="packaged demo zip not built yet")
def test_demo_dataset_loads():
    s = load_data("demo")
    assert s.name == "demo" and s.train.num_classes == 10 and s.test is not None
    assert s.train.source.load(0).mode == "RGB"


# ---------------------------------------------------------------- splits


def test_stratified_holdout_is_seeded_and_stratified(tree):
    labels = np.repeat([0, 1, 2], [50, 30, 1])
    tr, te = stratified_holdout(labels, 0.2, seed=3)
    assert np.bincount(labels[te], minlength=3).tolist() == [10, 6, 0]
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(81))
    assert np.array_equal(te, stratified_holdout(labels, 0.2, seed=3)[1])
    assert not np.array_equal(te, stratified_holdout(labels, 0.2, seed=4)[1])


def test_holdout_through_load_data(tmp_path):
    root = make_tree(tmp_path / "t", {"cat": 10, "dog": 5})
    a = load_data(str(root), test_fraction=0.2, seed=1)
    b = load_data(str(root), test_fraction=0.2, seed=1)
    assert a.test.ids == b.test.ids and len(a.test) == 3 and a.test.labels.tolist() == [0, 0, 1]
    assert a.info["test_from"] == "holdout" and not set(a.test.ids) & set(a.train.ids)
    assert load_data(str(root), test_fraction=0).test is None


def test_max_train_is_balanced_and_seeded():
    labels = np.repeat([0, 1, 2], [100, 4, 60])
    pick = stratified_subset(labels, 30, seed=0)
    assert np.bincount(labels[pick]).tolist() == [13, 4, 13]
    assert np.array_equal(pick, stratified_subset(labels, 30, seed=0))
    assert not np.array_equal(pick, stratified_subset(labels, 30, seed=1))
    assert len(stratified_subset(labels, 31, seed=0)) == 31


def test_max_train_and_max_test_in_load_data(split_tree):
    s = load_data(str(split_tree), max_train=6, max_test=3, seed=5)
    assert np.bincount(s.train.labels).tolist() == [2, 2, 2] and np.bincount(s.test.labels).tolist() == [1, 1, 1]
    assert s.info["train_before_max"] == 12 and s.info["test_before_max"] == 4
    assert load_data(str(split_tree), max_train=6, max_test=3, seed=5).train.ids == s.train.ids
    with pytest.raises(UserError, match="max_train must be a positive"):
        load_data(str(split_tree), max_train=0)


@pytest.mark.skipif(not CIFAR_JPEG_ZIP.exists(), reason="shared CIFAR-10 jpeg zip not present")
def test_real_cifar10_jpeg_zip_headers():
    s = load_data(str(CIFAR_JPEG_ZIP))
    assert isinstance(s, DataSplits)
    assert (len(s.train), len(s.test), s.train.num_classes) == (50000, 10000, 10)
    assert np.bincount(s.train.labels).tolist() == [5000] * 10
