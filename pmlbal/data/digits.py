"""scikit-learn's digits (8x8 grey images shipped with the package): classes 0-4 train, 5-9 test."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .base import RetrievalDataset


class Digits(RetrievalDataset):
    name = "digits"
    layout = "sklearn.datasets.load_digits (ships with scikit-learn)"
    val_fraction = 0.4  # 5 train classes: 3 to train on, 2 to validate with

    def __init__(self, root=None, split="train"):
        super().__init__(root, split)

    def _load(self, half):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        keep = bunch.target <= 4 if half == "train" else bunch.target >= 5
        rows = np.flatnonzero(keep)
        # 0..16 grey levels -> 0..255; "paths" are stable ids that the cache fingerprints.
        self._images = {f"digits/{r}": (bunch.images[r] * (255.0 / 16.0)).round().astype(np.uint8) for r in rows}
        return [f"digits/{r}" for r in rows], bunch.target[keep]

    def load_image(self, i: int) -> Image.Image:
        return Image.fromarray(self._images[self.paths[i]]).convert("RGB")
