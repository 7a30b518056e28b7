"""Data sets (official layouts, standard zero-shot splits), the decode-once cache and device batches."""

from __future__ import annotations

from pathlib import Path

from .base import SPLITS, CorruptImageError, DatasetLayoutError, RetrievalDataset
from .cars import Cars196
from .cub import CUB200
from .digits import Digits
from .sop import SOP

DATASETS: dict[str, type[RetrievalDataset]] = {"cub": CUB200, "cars": Cars196, "sop": SOP, "digits": Digits}


def create(name: str, root: str | Path | None = None, split: str = "train") -> RetrievalDataset:
    """Build a data set by name: ``cub``, ``cars``, ``sop`` or ``digits`` (which needs no root)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](root, split)


__all__ = ["CUB200", "Cars196", "CorruptImageError", "DATASETS", "DatasetLayoutError", "Digits", "RetrievalDataset",
           "SOP", "SPLITS", "create"]
