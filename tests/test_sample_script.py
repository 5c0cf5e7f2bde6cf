"""scripts/make_demo_sample.py: the demo / GPU-grid samples stay balanced; the long-tailed one has the asked tail."""
import importlib.util
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_sample.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_demo_sample", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def source_zip(path: Path, classes: list[str], per_class: int) -> None:
    data = jpeg()
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            for c in classes:
                for i in range(per_class):
                    z.writestr(f"{split}/{c}/{i:04d}.jpg", data)


def counts(path: Path) -> Counter:
    with zipfile.ZipFile(path) as z:
        return Counter(tuple(n.split("/")[:2]) for n in z.namelist())


def test_balanced_by_default_and_long_tailed_on_request(tmp_path):
    mod = load_script()
    classes = [f"c{k}" for k in range(5)]
    source_zip(tmp_path / "src.zip", classes, 40)
    mod.main(str(tmp_path / "src.zip"), str(tmp_path / "bal.zip"), 30, 10)
    bal = counts(tmp_path / "bal.zip")
    assert all(bal[("train", c)] == 30 and bal[("test", c)] == 10 for c in classes)

    mod.main(str(tmp_path / "src.zip"), str(tmp_path / "lt.zip"), 30, 10, 10)
    lt = counts(tmp_path / "lt.zip")
    train = [lt[("train", c)] for c in classes]
    assert train == [30, 17, 9, 5, 3]  # 30 · 10^(−k/4), rounded: first class n_train, last n_train / 10
    assert all(lt[("test", c)] == 10 for c in classes)  # the test set stays balanced


def test_train_counts_run_from_n_to_n_over_ratio():
    mod = load_script()
    got = mod.train_counts([f"k{i}" for i in range(10)], 600, 10)
    assert got["k0"] == 600 and got["k9"] == 60
    assert list(got.values()) == sorted(got.values(), reverse=True)
