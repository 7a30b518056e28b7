"""Cars196 (Krause et al.): classes 1-98 train, 99-196 test, read from cars_annos.mat."""

from __future__ import annotations

import numpy as np

from .base import DatasetLayoutError, RetrievalDataset, class_range_mask


class Cars196(RetrievalDataset):
    name = "cars"
    layout = "cars_annos.mat (struct 'annotations' with relative_im_path, class) + car_ims/"

    def _load(self, half):
        from scipy.io import loadmat

        path = self._require("cars_annos.mat")
        try:
            annos = loadmat(str(path), squeeze_me=True)["annotations"]
            rel = [str(a) for a in annos["relative_im_path"]]
            y = np.array([int(c) for c in annos["class"]], dtype=np.int64)
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise DatasetLayoutError(f"cars: malformed cars_annos.mat under {self.root}: {err} ({self.layout})") from None
        keep = class_range_mask(y, 1, 98) if half == "train" else class_range_mask(y, 99, 196)
        return [str(self.root / r) for r, k in zip(rel, keep) if k], y[keep] - 1
