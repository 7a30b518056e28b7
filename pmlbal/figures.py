"""Figure helpers shared by the leaderboard's plots and the tuner's report: matplotlib without a
display, and atomic writes of a finished figure."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write `fig` to `path` atomically (a temporary file in the same folder, then a rename) and close it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
