"""Feature extraction's faster image path gives exactly the numbers of the per-image torchvision pipeline.

The decoding thread only decodes; the main thread resizes each batch in one call (:class:`EvalResize`,
uint8) and normalises it at once; worker processes resize image by image. Every path gives the
per-image eval transform's numbers exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from noisyft.backbones import create_backbone
from noisyft.data.sources import ArraySource
from noisyft.data.transforms import EvalResize, Preprocess, eval_transform
from noisyft.features.loader import forward_features, source_features

MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}


@pytest.mark.parametrize("w, h", [(32, 32), (500, 375), (375, 500), (97, 61), (224, 224), (20, 300)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear", "nearest"])
def test_eval_resize_is_torchvision_resize_crop(w, h, interp):
    """Bicubic/bilinear: torchvision's uint8 tensor Resize + CenterCrop pixel for pixel, within 2 levels of PIL's;
    nearest: PIL's pixel for pixel."""
    im = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    for size in (64, 96, 224):
        crop = T.Compose([T.Resize(size, interpolation=MODES[interp], antialias=True), T.CenterCrop(size), T.ToImage()])
        pil = crop(im).as_subclass(torch.Tensor)
        got = EvalResize(size, interp)(im)
        assert got.dtype == torch.uint8 and got.shape == pil.shape
        if interp == "nearest":
            assert torch.equal(got, pil)
            continue
        assert torch.equal(got, crop(T.ToImage()(im)).as_subclass(torch.Tensor))
        assert (got.int() - pil.int()).abs().max() <= 2


@pytest.mark.parametrize("interp", ["bicubic", "nearest"])
def test_eval_resize_batch_of_mixed_sizes_equals_one_at_a_time(interp):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 30, 3), (61, 97, 3), (40, 30, 3), (32, 32, 3)]]
    resize = EvalResize(48, interp)
    got = resize.batch(images)
    assert got.shape == (4, 3, 48, 48) and got.is_contiguous(memory_format=torch.channels_last)
    for g, a in zip(got, images):
        assert torch.equal(g, resize(Image.fromarray(a)))


def _per_image_reference(backbone, source, batches) -> np.ndarray:
    tf = eval_transform(backbone.preprocess)
    return np.concatenate([forward_features(backbone, torch.stack([tf(source.load(i)) for i in b]), torch.device("cpu")).numpy()
                           for b in batches]).astype(np.float32)


@pytest.mark.parametrize("mode", ["inline", "thread", "processes"])
def test_extraction_equals_the_per_image_eval_transform(mode, monkeypatch):
    """Every decoding mode (main thread, background thread, worker process) gives the per-image pipeline's numbers."""
    from noisyft.features import loader

    monkeypatch.setattr(loader, "default_workers", lambda: 1)  # as on 2 cores: None means the decoding thread
    workers = {"inline": 0, "thread": None, "processes": 1}[mode]
    assert loader.decoding_mode(workers) == mode
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 256, (10, 40, 30, 3), dtype=np.uint8))
    backbone = create_backbone("test_vit", pretrained=False, image_size=32).eval().to(memory_format=torch.channels_last)
    batches = [range(0, 4), range(4, 8), range(8, 10)]  # the same batches (BLAS results depend on the batch shape)
    got = source_features(backbone, source, np.arange(10), batch_size=4, num_workers=workers, device=torch.device("cpu"))
    np.testing.assert_array_equal(got, _per_image_reference(backbone, source, batches))


def test_one_decoding_pipeline_for_all_shards_keeps_each_shards_batches(tmp_path, monkeypatch):
    """Shards share one decoding thread but keep their own batches, so the entry is what per-shard extraction gives."""
    from noisyft.features import loader
    from noisyft.features.cache import extract_features

    monkeypatch.setattr(loader, "default_workers", lambda: 1)
    started = []
    real = loader._prefetched
    monkeypatch.setattr(loader, "_prefetched", lambda *a, **k: started.append(1) or real(*a, **k))
    source = ArraySource(np.random.default_rng(2).integers(0, 256, (11, 40, 30, 3), dtype=np.uint8))
    backbone = create_backbone("test_vit", pretrained=False, image_size=32)
    got = np.asarray(extract_features(backbone, source, cache_dir=tmp_path, batch_size=3, shard_rows=5, progress=False))
    assert started == [1]  # one thread for the three shards
    # shards [0, 5), [5, 10), [10, 11), each cut into batches of 3 from its own start
    batches = [range(0, 3), range(3, 5), range(5, 8), range(8, 10), range(10, 11)]
    np.testing.assert_array_equal(got, _per_image_reference(backbone.eval(), source, batches))


class _Broken(ArraySource):
    def load(self, i: int) -> Image.Image:
        if i == 6:
            from noisyft.errors import UserError

            raise UserError("cannot read image broken-6.jpg: truncated")
        return super().load(i)

    def raw(self, i: int) -> np.ndarray:  # what extraction reads
        if i == 6:
            self.load(i)
        return super().raw(i)


def test_a_broken_image_in_the_decoding_thread_fails_in_the_caller_and_stops_the_thread(monkeypatch):
    import threading

    from noisyft.errors import UserError
    from noisyft.features import loader

    monkeypatch.setattr(loader, "default_workers", lambda: 1)
    source = _Broken(np.zeros((12, 8, 8, 3), dtype=np.uint8))
    backbone = create_backbone("test_vit", pretrained=False, image_size=32).eval()
    with pytest.raises(UserError, match="^cannot read image broken-6.jpg: truncated$"):
        source_features(backbone, source, np.arange(12), batch_size=2, num_workers=None, device=torch.device("cpu"))
    assert not [t for t in threading.enumerate() if t.name == "noisyft-decode"]


def test_closing_the_stream_early_stops_the_decoding_thread():
    import threading

    from noisyft.features.loader import _prefetched

    made = []
    stream = _prefetched(lambda b: made.append(int(b[0])) or b, [np.array([i]) for i in range(100)], depth=1)
    assert int(next(stream)[0]) == 0
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "noisyft-decode"]
    assert len(made) < 10  # it stopped instead of decoding everything


def _jpeg(mode: str, **kw) -> bytes:
    import io

    rng = np.random.default_rng(len(kw))
    im = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((160, 120)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    import io

    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(buf, "JPEG", exif=ex.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("data", [
    _jpeg("RGB", quality=90), _jpeg("RGB", quality=75, subsampling=2), _jpeg("RGB", quality=95, subsampling=0),
    _jpeg("RGB", progressive=True), _jpeg("L"), _jpeg("CMYK"), _exif_rotated(),
], ids=["q90", "420", "444", "progressive", "grey", "cmyk", "exif-rotated"])
def test_fast_jpeg_decoding_gives_pils_pixels(data):
    import io

    from noisyft.data.sources import decode_jpeg_fast, to_rgb

    fast = decode_jpeg_fast(data)
    assert fast is not None and fast.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(to_rgb(Image.open(io.BytesIO(data)))))


def test_truncated_or_missing_jpegs_still_fail_with_the_file_named(tmp_path):
    import io

    from noisyft.data.sources import decode_image, decode_jpeg_fast
    from noisyft.errors import UserError

    data = _jpeg("RGB")[:300]
    assert decode_jpeg_fast(data) is None  # declined: PIL decides
    with pytest.raises(UserError, match=r"cannot read image cut.jpg: "):
        decode_image(io.BytesIO(data), "cut.jpg")
    with pytest.raises(UserError, match=r"cannot read image .*gone.jpg: file not found"):
        decode_image(tmp_path / "gone.jpg", str(tmp_path / "gone.jpg"))
