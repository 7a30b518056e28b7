"""CUB-200-2011 (Wah et al.): classes 1-100 train, 101-200 test."""

from __future__ import annotations

import numpy as np

from ..registry import register_dataset
from .base import DatasetLayoutError, RetrievalDataset, class_range_mask


@register_dataset(
    "cub", ks=(1, 2, 4, 8), val_folds=4,
    defaults=dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                  batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
    tune={"batch_size": ("log2-int", 32, 512), "lr": ("log", 1e-5, 1e-3)},
)
class CUB200(RetrievalDataset):
    name = "cub"
    layout = "CUB_200_2011/{images.txt, image_class_labels.txt, images/<class>/<file>.jpg}"

    def _load(self, half):
        base = self.root / "CUB_200_2011" if self.root and (self.root / "CUB_200_2011").is_dir() else self.root
        self.root = base
        images = _read_pairs(self._require("images.txt"), self.name, self.layout)
        labels = _read_pairs(self._require("image_class_labels.txt"), self.name, self.layout)
        self._require("images")
        missing = set(images) - set(labels)
        if missing:
            raise DatasetLayoutError(
                f"cub: image_class_labels.txt has no class for image id {sorted(missing)[0]} (expected {self.layout})"
            )
        for file, table in (("images.txt", images), ("image_class_labels.txt", labels)):
            bad = next((k for k in table if not k.isdigit()), None)
            if bad is not None:
                raise DatasetLayoutError(f"cub: {file} has image id {bad!r}, not a whole number ({self.layout})")
        bad = next((i for i in images if not labels[i].isdigit()), None)
        if bad is not None:
            raise DatasetLayoutError(f"cub: image_class_labels.txt gives image {bad} the class {labels[bad]!r}, "
                                     f"not a whole number ({self.layout})")
        ids = sorted(images, key=int)
        y = np.array([int(labels[i]) for i in ids])
        keep = class_range_mask(y, 1, 100) if half == "train" else class_range_mask(y, 101, 200)
        paths = [str(base / "images" / images[i]) for i, k in zip(ids, keep) if k]
        return paths, y[keep] - 1


def _read_pairs(path, name, layout) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetLayoutError(f"{name}: {path.name} line {n} should be '<id> <value>', got {line!r} ({layout})")
        out[parts[0]] = parts[1]
    if not out:
        raise DatasetLayoutError(f"{name}: {path.name} is empty ({layout})")
    return out
