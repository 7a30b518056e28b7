"""Stanford Online Products (Oh Song et al.): Ebay_train.txt / Ebay_test.txt."""

from __future__ import annotations

import numpy as np

from ..registry import register_dataset
from .base import DatasetLayoutError, RetrievalDataset


@register_dataset(
    "sop", ks=(1, 10, 100, 1000), val_folds=4,
    defaults=dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                  batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
    tune={"batch_size": ("log2-int", 32, 512), "lr": ("log", 1e-5, 1e-3)},
)
class SOP(RetrievalDataset):
    name = "sop"
    layout = "Ebay_train.txt, Ebay_test.txt (header; image_id class_id super_class_id path) + <super>_final/"

    def _load(self, half):
        path = self._require("Ebay_train.txt" if half == "train" else "Ebay_test.txt")
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if not lines or lines[0].split()[:2] != ["image_id", "class_id"]:
            raise DatasetLayoutError(f"sop: {path.name} lacks its header line ({self.layout})")
        paths, labels = [], []
        for n, line in enumerate(lines[1:], 2):
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                raise DatasetLayoutError(f"sop: {path.name} line {n} is malformed: {line!r} ({self.layout})")
            labels.append(int(parts[1]) - 1)
            paths.append(str(self.root / parts[3]))
        return paths, np.array(labels, dtype=np.int64)
