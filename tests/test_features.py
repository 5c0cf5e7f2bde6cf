import os

import numpy as np
import pytest
import torch
from PIL import Image

from noisyft.backbones import create_backbone
from noisyft.data import load_data
from noisyft.features.cache import extract_features, feature_key


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone("test_efficientnet", pretrained=False, image_size=32)


def _count_calls(backbone):
    calls = {"n": 0}
    orig = backbone.features

    def counted(x):
        calls["n"] += 1
        return orig(x)

    backbone.features = counted
    return calls


def test_cache_hit_miss_and_invalidation(image_tree, tmp_path, backbone):
    cache = tmp_path / "c"
    train = load_data(str(image_tree)).train
    calls = _count_calls(backbone)
    f1 = extract_features(backbone, train.source, cache_dir=cache, batch_size=32, num_workers=0, progress=False)
    assert f1.shape == (len(train), backbone.num_features) and calls["n"] > 0
    # equals a direct eval-mode forward
    from noisyft.data.transforms import eval_transform
    x = torch.stack([eval_transform(backbone.preprocess)(train.source.load(i)) for i in range(3)])
    with torch.no_grad():
        assert np.allclose(f1[:3], backbone.eval()(x).numpy(), atol=1e-4)
    n = calls["n"]
    f2 = extract_features(backbone, train.source, cache_dir=cache, batch_size=32, num_workers=0, progress=False)
    assert calls["n"] == n and isinstance(f2, np.memmap) and np.array_equal(f1, f2)  # hit: no forward
    key = feature_key(backbone, train.source)
    # a changed image changes the key
    first = image_tree / train.ids[0]
    Image.new("RGB", (32, 32), (1, 2, 3)).save(first)
    os.utime(first, ns=(1, 1))
    train2 = load_data(str(image_tree)).train
    assert feature_key(backbone, train2.source) != key
    # another resolution or other weights change the key
    other = create_backbone("test_efficientnet", pretrained=False, image_size=48)
    assert feature_key(other, train.source) != key
    torch.nn.init.zeros_(backbone.model.conv_stem.weight)
    backbone.weights_id = backbone.weights_id + ":changed"
    assert feature_key(backbone, train.source) != key


def test_half_written_cache_is_never_trusted_and_shards_resume(image_tree, tmp_path, backbone):
    cache = tmp_path / "c"
    train = load_data(str(image_tree)).train
    full = np.array(extract_features(backbone, train.source, cache_dir=cache, batch_size=16, num_workers=0,
                                     shard_rows=50, progress=False))
    entry = cache / "features" / feature_key(backbone, train.source)
    # simulate a kill after the first shard: only part-00000 remains, no features.npy
    (entry / "features.npy").unlink()
    (entry / "partial").mkdir()
    np.save(entry / "partial" / "part-00000.npy", full[:50])
    (entry / "partial" / ".part-00001.npy.x.tmp").write_bytes(b"garbage")  # a torn temporary file
    calls = _count_calls(backbone)
    again = extract_features(backbone, train.source, cache_dir=cache, batch_size=10, num_workers=0, shard_rows=50, progress=False)
    assert calls["n"] == 7  # rows 50..119 only: 70 images in batches of 10
    assert np.allclose(again, full, atol=1e-5)
    assert not (entry / "partial").exists()


def test_extraction_with_worker_processes_matches_in_process(image_tree, tmp_path, backbone):
    train = load_data(str(image_tree)).train
    a = extract_features(backbone, train.source, cache_dir=tmp_path / "a", batch_size=16, num_workers=0, progress=False)
    b = extract_features(backbone, train.source, cache_dir=tmp_path / "b", batch_size=16, num_workers=2, progress=False)
    assert np.allclose(a, b, atol=1e-5)


def test_decoded_images_give_exactly_the_loader_logits(tmp_path):
    """Eval passes from the in-memory uint8 images equal the decoding loader's, bit for bit (with a real resize)."""
    from tests.conftest import write_tree
    from noisyft.data.transforms import eval_transform, normalize
    from noisyft.features.decoded import decode_images, decoded_bytes
    from noisyft.engine import decoded_logits, image_logits

    write_tree(tmp_path / "imgs", 7, size=37)  # odd size: the resize to 40 px and the centre crop both act
    data = load_data(str(tmp_path / "imgs")).train
    torch.manual_seed(0)
    bb = create_backbone("test_efficientnet", pretrained=False, image_size=40)
    images = decode_images(data, bb.preprocess, batch_size=8, num_workers=0, progress=False)
    assert images.dtype == torch.uint8 and images.shape == (len(data), 3, 40, 40) and len(data) > 8
    assert images.numel() == decoded_bytes(len(data), bb.preprocess)
    dev = torch.device("cpu")
    ref = image_logits(bb, data, eval_transform(bb.preprocess), device=dev, batch_size=8, num_workers=0, progress=False)
    got = decoded_logits(bb, images, normalize(bb.preprocess), device=dev, batch_size=8)
    assert torch.equal(ref, got)
