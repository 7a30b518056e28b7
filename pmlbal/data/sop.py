"""Stanford Online Products (Oh Song et al.): Ebay_train.txt / Ebay_test.txt."""

from __future__ import annotations

import numpy as np

from .base import DatasetLayoutError, RetrievalDataset


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
