"""Shared fixtures: a private feature cache and small generated image trees."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# A private feature cache for the whole session, set before any fixture (module-scoped ones too) runs.
os.environ["NOISYFT_CACHE"] = tempfile.mkdtemp(prefix="noisyft-test-cache-")

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def write_tree(root, per_class: int, seed: int = 0, size: int = 32, split: str | None = None) -> list[str]:
    """Write ``root[/split]/<class>/<i>.png``: class-coloured noisy images (learnable by a tiny net)."""
    rng = np.random.default_rng(seed)
    base = root / split if split else root
    paths = []
    for cls in CLASSES:
        (base / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            px = np.clip(np.array(COLOURS[cls]) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(base / cls / f"{i:03d}.png")
            paths.append(f"{cls}/{i:03d}.png")
    return paths


def write_splits(root, train_per_class: int, test_per_class: int):
    """``root/train`` and ``root/test`` trees (seeds 0 and 1); returns ``root``."""
    write_tree(root, train_per_class, seed=0, split="train")
    write_tree(root, test_per_class, seed=1, split="test")
    return root


@pytest.fixture
def image_tree(tmp_path):
    """root/train/<class>/*.png (40 per class) and root/test/<class>/*.png (10 per class)."""
    return write_splits(tmp_path / "imgs", 40, 10)


def cli_error(argv, capsys) -> str:
    """Run the CLI expecting a user error: exit 2 and exactly one ``error:`` line, no traceback; return it."""
    from noisyft.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs) for the session (tune and bench's Ray executor join it instead of starting their own)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
