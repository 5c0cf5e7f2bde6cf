"""The shared feature cache: concurrent writers, damaged entries, content keys."""
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from noisyft.backbones import create_backbone
from noisyft.data import load_data
from noisyft.features.cache import DONE_FILE, extract_features, feature_key
from tests.conftest import write_tree

EXTRACT = """
import os, sys, time
import numpy as np, torch
from noisyft.backbones import create_backbone
from noisyft.data import load_data
from noisyft.features.cache import extract_features
root, cache, out, ready, go = sys.argv[1:]
torch.manual_seed(0)
bb = create_backbone("test_efficientnet", pretrained=False, image_size=32)
src = load_data(root, test_fraction=0).train.source
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
np.save(out, np.asarray(extract_features(bb, src, cache_dir=cache, batch_size=4, num_workers=0, progress=False)))
"""


def test_two_processes_extracting_the_same_images_at_once(tmp_path):
    root = tmp_path / "imgs"
    write_tree(root, 12)  # 36 images in shards of 4: nine shards each
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "NOISYFT_SHARD_ROWS": "4", "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", EXTRACT, str(root), str(cache), str(tmp_path / f"f{k}.npy"),
                               str(tmp_path / f"ready{k}"), str(go)], env=env, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()  # both start extracting at the same moment
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    a, b = np.load(tmp_path / "f0.npy"), np.load(tmp_path / "f1.npy")
    assert a.shape == (36, a.shape[1]) and np.array_equal(a, b)
    entries = list((cache / "features").iterdir())
    assert len(entries) == 1 and (entries[0] / DONE_FILE).exists() and not (entries[0] / "partial").exists()


@pytest.fixture
def cached(tmp_path):
    root = tmp_path / "imgs"
    write_tree(root, 10)
    torch.manual_seed(0)
    bb = create_backbone("test_efficientnet", pretrained=False, image_size=32)
    src = load_data(str(root), test_fraction=0).train.source
    kw = dict(cache_dir=tmp_path / "c", batch_size=16, num_workers=0, progress=False)
    ref = np.array(extract_features(bb, src, **kw))
    entry = tmp_path / "c" / "features" / feature_key(bb, src)
    return bb, src, kw, ref, entry


def _truncate(f):
    f.write_bytes(f.read_bytes()[:1000])


def _empty(f):
    f.write_bytes(b"")


def _same_size(f):
    data = bytearray(f.read_bytes())
    data[-400:] = np.full(100, 7.0, dtype=np.float32).tobytes()  # the last features silently become 7.0
    f.write_bytes(bytes(data))


def _no_done(f):
    (f.parent / DONE_FILE).unlink()  # killed between features.npy and done.json


@pytest.mark.parametrize("damage", [_truncate, _empty, _same_size])
def test_damaged_entry_is_rebuilt_with_one_warning(cached, damage, caplog):
    bb, src, kw, ref, entry = cached
    damage(entry / "features.npy")
    with caplog.at_level(logging.WARNING, logger="noisyft"):
        got = extract_features(bb, src, **kw)
    assert np.array_equal(np.asarray(got), ref)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "rebuilding" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="noisyft"):  # and it is good again afterwards
        assert np.array_equal(np.asarray(extract_features(bb, src, **kw)), ref)
    assert not caplog.records


def test_entry_without_done_file_is_never_read(cached):
    bb, src, kw, ref, entry = cached
    _same_size(entry / "features.npy")
    _no_done(entry / "features.npy")
    assert np.array_equal(np.asarray(extract_features(bb, src, **kw)), ref)


def test_kill_between_features_and_done_file_recovers(tmp_path, monkeypatch):
    import noisyft.features.cache as features

    root = tmp_path / "imgs"
    write_tree(root, 4)
    torch.manual_seed(0)
    bb = create_backbone("test_efficientnet", pretrained=False, image_size=32)
    src = load_data(str(root), test_fraction=0).train.source
    kw = dict(cache_dir=tmp_path / "c", batch_size=4, num_workers=0, shard_rows=4, progress=False)

    def die(point):
        if point == "extract:assembled":
            raise KeyboardInterrupt  # stands in for SIGKILL at that point (the resume tests use the real one)

    monkeypatch.setattr(features, "maybe_die", die)
    with pytest.raises(KeyboardInterrupt):
        extract_features(bb, src, **kw)
    entry = tmp_path / "c" / "features" / feature_key(bb, src)
    assert (entry / "features.npy").exists() and not (entry / DONE_FILE).exists() and (entry / "partial").exists()
    monkeypatch.undo()
    calls = {"n": 0}
    orig = bb.features
    bb.features = lambda x: (calls.__setitem__("n", calls["n"] + 1), orig(x))[1]
    got = extract_features(bb, src, **kw)
    assert calls["n"] == 0 and got.shape == (12, bb.num_features) and (entry / DONE_FILE).exists()  # from the shards


def test_image_replaced_in_place_with_same_size_and_mtime_changes_the_key(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (10 * i, 50, 90)).save(root / cls / f"{i}.bmp")  # BMP: size fixed by dims
    bb = create_backbone("test_efficientnet", pretrained=False, image_size=32)
    before = feature_key(bb, load_data(str(root), test_fraction=0).train.source)
    f = root / "a" / "1.bmp"
    st = f.stat()
    Image.new("RGB", (16, 16), (250, 0, 0)).save(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert feature_key(bb, load_data(str(root), test_fraction=0).train.source) != before
    # moving the folder keeps the key (content, not dates or location)
    os.rename(root, tmp_path / "moved")
    after = feature_key(bb, load_data(str(tmp_path / "moved"), test_fraction=0).train.source)
    os.rename(tmp_path / "moved", root)
    assert after == feature_key(bb, load_data(str(root), test_fraction=0).train.source)
