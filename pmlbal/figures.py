"""Figure helpers shared by the leaderboard's plots and the tuner's report: matplotlib without a
display, and atomic writes of a finished figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write `fig` to `path` atomically (`pmlbal.files.atomic_path`) and close it."""
    try:
        with atomic_path(path, suffix=".tmp" + Path(path).suffix) as tmp:  # savefig reads the format off the name
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
