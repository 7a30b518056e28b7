"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 70,000 28x28 grey images in 10 classes, read from the
four official IDX files. Zero-shot split: classes 0-4 (T-shirt, trouser, pullover, dress, coat)
train, 5-9 (sandal, shirt, sneaker, bag, ankle boot) test, each from both the official train and
t10k files (7,000 images a class, 35,000 a half).

Root: `root`, else ``$PMLBAL_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist`` package) when it exists. Files may be gzipped (``.gz``, as shipped) or not.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..registry import classes_per_batch, register_dataset
from .base import DatasetLayoutError, RetrievalDataset, parse_split

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: unsigned bytes, 3 resp. 1 dimensions
#: Images kept per class of the train-class splits (train, train-sub, val), so a run, and a tuning
#: trial scored on val, stays short on a 2-core CPU: the first 1,000 of each class's 7,000 (official
#: train file first). The test split is always complete.
TRAIN_CAP_PER_CLASS = 1000


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array; errors name the file and what is wrong."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetLayoutError(f"fashion-mnist: cannot read {path}: {err}") from None
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetLayoutError(f"fashion-mnist: {path} is truncated ({len(raw)} bytes, no IDX header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetLayoutError(f"fashion-mnist: {path} is not an IDX {'image' if ndim == 3 else 'label'} file "
                                 f"(magic {found:#010x}, expected {magic:#010x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DatasetLayoutError(f"fashion-mnist: {path} is truncated or padded: header says {shape} "
                                 f"({size} bytes), the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def default_root() -> Path | None:
    env = os.environ.get("PMLBAL_FASHION_MNIST")
    if env:
        return Path(env)
    return DEBIAN_ROOT if DEBIAN_ROOT.is_dir() else None


@register_dataset(
    "fashion-mnist", ks=(1, 2, 4, 8), needs_root=False, val_folds=3,
    defaults=dict(backbone="resnet10t", embedding_dim=64, cache_size=32, input_size=32, epochs=4,
                  batch_size=64, samples_per_class=16, lr=2e-3, crop_scale=0.7),
    tune={"batch_size": ("log2-int", 16, 128), "lr": ("log", 1e-4, 1e-2)},
    # train-sub holds 3 classes: at most 3 classes a batch, so m = batch / 2 keeps 2 classes a batch.
    samples_per_class=lambda batch_size: batch_size // 2, final_samples_per_class=classes_per_batch(4),
    lead_metric="map_at_r",
    lead_reason=("Recall@1 saturates on Fashion-MNIST's 5 test classes of 7,000 images: an untrained network "
                 "already puts a same-class image first for about 90 % of the queries, and training moves "
                 "it by a point or two; MAP@R, over all 6,999 same-class images of a query, moves by ten."),
)
class FashionMNIST(RetrievalDataset):
    name = "fashion-mnist"
    layout = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
              "t10k-labels-idx1-ubyte.gz (the official IDX files; Debian: apt-get install dataset-fashion-mnist)")
    val_fraction = 0.4  # 5 train classes: 3 to train on, 2 to validate with
    train_cap_per_class = TRAIN_CAP_PER_CLASS
    paths_are_files = False

    def __init__(self, root=None, split="train"):
        root = Path(root) if root is not None else default_root()
        if root is None:
            raise DatasetLayoutError(
                f"fashion-mnist: no root: pass --root, set $PMLBAL_FASHION_MNIST, or install Debian's "
                f"dataset-fashion-mnist (files under {DEBIAN_ROOT}); expected {self.layout}")
        super().__init__(root, split)
        if parse_split(split)[0] in ("train", "train-sub", "val") and self.train_cap_per_class:
            keep = np.concatenate([np.flatnonzero(self.labels == c)[: self.train_cap_per_class]
                                   for c in np.unique(self.labels)])
            keep.sort()
            self.paths = [self.paths[i] for i in keep]
            self.labels = self.labels[keep]

    def _file(self, stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (self.root / name).is_file():
                return self.root / name
        raise DatasetLayoutError(f"fashion-mnist: missing {stem}.gz under {self.root} (expected {self.layout})")

    def _load(self, half):
        images, labels = [], []
        for part, (img_stem, lab_stem) in FILES.items():
            x = read_idx(self._file(img_stem), IMAGES_MAGIC)
            y = read_idx(self._file(lab_stem), LABELS_MAGIC)
            if len(x) != len(y) or x.shape[1:] != (28, 28):
                raise DatasetLayoutError(f"fashion-mnist: {img_stem} holds {len(x)} images of {x.shape[1:]}, "
                                         f"{lab_stem} {len(y)} labels (expected as many 28x28 images as labels)")
            images.append(x)
            labels.append(y)
        self._train_file_rows = len(images[0])  # rows past it come from the t10k files
        x, y = np.concatenate(images), np.concatenate(labels).astype(np.int64)
        if y.max() > 9:
            raise DatasetLayoutError(f"fashion-mnist: label {int(y.max())} out of range 0-9 under {self.root}")
        rows = np.flatnonzero(y <= 4 if half == "train" else y >= 5)
        self._pixels = x
        # "Paths" are stable ids (file part and row) that the cache fingerprints.
        return [f"fashion-mnist/{r}" for r in rows], y[rows]

    def cls_test_mask(self, paths: list[str], labels: np.ndarray) -> np.ndarray:
        """The official division: the 10,000 images of the t10k files are the test images."""
        return np.array([int(p.rsplit("/", 1)[1]) >= self._train_file_rows for p in paths], dtype=bool)

    def load_image(self, i: int) -> Image.Image:
        row = int(self.paths[i].rsplit("/", 1)[1])
        return Image.fromarray(self._pixels[row]).convert("RGB")
