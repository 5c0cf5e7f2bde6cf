"""Data that used to be read silently wrong: zip-slip names, 16-bit PNGs, EXIF orientation, symlinked folders."""
import logging
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from noisyft.data import load_data
from noisyft.data.sources import decode_image
from noisyft.errors import UserError
from tests.conftest import write_tree


def _zip_tree(tmp_path, extra: str) -> str:
    root = tmp_path / "t"
    paths = write_tree(root, 3)
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in paths:
            zf.write(root / p, p)
        zf.writestr(zipfile.ZipInfo(extra), (root / paths[0]).read_bytes())
    assert extra in zipfile.ZipFile(z).namelist()  # the hostile name is really stored
    return str(z)


@pytest.mark.parametrize("member", ["/abs/red/x.png", "../red/x.png", "red/../../x.png", "C:/red/x.png"])
def test_zip_members_with_absolute_or_dotdot_paths_are_refused_by_name(tmp_path, member):
    z = _zip_tree(tmp_path, member)
    with pytest.raises(UserError) as e:
        load_data(z)
    msg = str(e.value)
    assert member in msg and "zip-slip" in msg and "\n" not in msg


def _png16(path, value: int, size=(8, 6)):
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # really 16 bits on disk


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    for value, want in ((40000, 156), (65535, 255), (257 * 10, 10), (0, 0)):
        _png16(tmp_path / "g.png", value)
        px = np.asarray(decode_image(tmp_path / "g.png", "g.png"))
        assert px.shape == (6, 8, 3) and (px == want).all(), (value, px[0, 0])


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), dtype=np.uint8)  # stored 20 wide × 10 high, left half white
    a[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(a).save(tmp_path / "p.jpg", exif=exif, quality=95)
    im = decode_image(tmp_path / "p.jpg", "p.jpg")
    assert im.size == (10, 20)  # shown upright: 10 wide × 20 high
    px = np.asarray(im).mean(2)
    assert px[:10].mean() > 200 and px[10:].mean() < 50  # the stored left (white) half is now on top
    Image.fromarray(a).save(tmp_path / "q.jpg", quality=95)  # no tag: unchanged
    assert decode_image(tmp_path / "q.jpg", "q.jpg").size == (20, 10)


def test_symlinked_class_folder_is_read(tmp_path):
    root = tmp_path / "data"
    write_tree(root, 4)
    elsewhere = tmp_path / "elsewhere" / "blue"
    os.makedirs(elsewhere.parent)
    os.rename(root / "blue", elsewhere)
    os.symlink(elsewhere, root / "blue")
    train = load_data(str(root), test_fraction=0).train
    assert train.classes == ["blue", "green", "red"] and len(train) == 12
    assert np.asarray(train.source.load(train.ids.index("blue/000.png"))).shape == (32, 32, 3)


def test_symlink_loop_is_read_once_with_a_warning(tmp_path, caplog):
    root = tmp_path / "data"
    write_tree(root, 4)
    os.symlink(root, root / "red" / "loop")
    with caplog.at_level(logging.WARNING, logger="noisyft"):
        train = load_data(str(root), test_fraction=0).train
    assert len(train) == 12
    assert any("red/loop" in r.getMessage() and "already read" in r.getMessage() for r in caplog.records)
