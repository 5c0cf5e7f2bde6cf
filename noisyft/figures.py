"""matplotlib, headless (Agg backend), and the one way a figure is written: a PNG, atomically.

Imported only by the modules that draw (the report, the bench plots), so the rest of noisyft never
loads matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from noisyft.atomic import atomic_path  # noqa: E402


def save_png(fig, path: Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders created, atomic rename), close it (always), return ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)  # also when writing fails: pyplot keeps every open figure alive
    return path
