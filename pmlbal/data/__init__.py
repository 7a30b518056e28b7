"""Data sets (official layouts, standard zero-shot splits), the decode-once cache and device batches.

Each data set is one module whose class registers its spec (`pmlbal.registry.register_dataset`):
loader, standard Ks, training defaults, tuning ranges and m rule.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import RegistryView, dataset_spec, list_datasets
from .base import SPLITS, CorruptImageError, DatasetLayoutError, RetrievalDataset
from .cars import Cars196
from .cjk_glyphs import CJKGlyphs
from .cub import CUB200
from .digits import Digits
from .fashion_mnist import FashionMNIST
from .sop import SOP

#: name -> loader class, for every registered data set (a view of the registry).
DATASETS = RegistryView(list_datasets, lambda name: dataset_spec(name).cls)


def create(name: str, root: str | Path | None = None, split: str = "train") -> RetrievalDataset:
    """Build a registered data set by name (``pmlbal.registry.list_datasets()``); digits needs no root."""
    return dataset_spec(name).load(root, split)


__all__ = ["CJKGlyphs", "CUB200", "Cars196", "CorruptImageError", "DATASETS", "DatasetLayoutError", "Digits", "FashionMNIST",
           "RetrievalDataset", "SOP", "SPLITS", "create"]
