"""Cars196 (Krause et al.): classes 1-98 train, 99-196 test, read from cars_annos.mat."""

from __future__ import annotations

import numpy as np

from ..registry import register_dataset
from .base import DatasetLayoutError, RetrievalDataset, class_range_mask


@register_dataset(
    "cars", ks=(1, 2, 4, 8), val_folds=4,
    defaults=dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                  batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
    tune={"batch_size": ("log2-int", 32, 512), "lr": ("log", 1e-5, 1e-3)},
)
class Cars196(RetrievalDataset):
    name = "cars"
    layout = "cars_annos.mat (struct 'annotations' with relative_im_path, class) + car_ims/"

    def _load(self, half):
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError

        path = self._require("cars_annos.mat")
        try:
            annos = loadmat(str(path), squeeze_me=True)["annotations"]
            rel = [str(a) for a in annos["relative_im_path"]]
            y = np.array([int(c) for c in annos["class"]], dtype=np.int64)
        except (KeyError, ValueError, TypeError, OSError, MatReadError, IndexError) as err:
            raise DatasetLayoutError(f"cars: malformed cars_annos.mat under {self.root}: {err} ({self.layout})") from None
        keep = class_range_mask(y, 1, 98) if half == "train" else class_range_mask(y, 99, 196)
        return [str(self.root / r) for r, k in zip(rel, keep) if k], y[keep] - 1
