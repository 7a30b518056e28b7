"""One loader base for every data set: official layout -> (image source, labels), class splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

#: The classification protocol of self-supervised evaluation (``--task ssl``): every class in both
#: splits, the images divided (`RetrievalDataset.cls_test_mask`), as a kNN or linear probe needs.
CLS_SPLITS = ("cls-train", "cls-test")
SPLITS = ("train", "test", "train-sub", "val", *CLS_SPLITS)
#: Default classification protocol: within each class, every CLS_TEST_EVERY-th image is a test image.
CLS_TEST_EVERY = 6
#: From this many train classes on, validation folds are contiguous blocks of classes (K-fold, as
#: MLRC's class-disjoint partitions); below, each fold holds out a window of the fixed split's size,
#: shifted down by one class per fold, so a 5-class train half still validates on 2 classes (on one
#: class MAP@R is trivial). K such windows cover the last n_val + K - 1 classes only: on digits and
#: Fashion-MNIST (5 train classes, 3 folds of 2) they are {3, 4}, {2, 3}, {1, 2}, and class 0 is never
#: held out. Kept so, because a fold's classes are not part of a run's key: moving a window would let
#: recorded validation runs stand for runs on other classes.
CONTIGUOUS_FOLDS_FROM = 40


def fold_split(split: str, folds: int = 1, fold: int = 0) -> str:
    """The name of `split` (train-sub or val) in fold `fold` of `folds`: ``"val@1of4"``; one fold is
    the fixed split and keeps its plain name. The name is safe in file names (caches carry it)."""
    if folds == 1 and fold == 0:
        return split
    if split not in ("train-sub", "val"):
        raise ValueError(f"folds divide the train classes: train-sub or val, not {split!r}")
    return f"{split}@{fold}of{folds}"


def parse_split(name: str) -> tuple[str, int, int]:
    """(split, folds, fold) of a split name (`fold_split`'s inverse); ValueError names a bad one."""
    split, _, rest = name.partition("@")
    folds, fold = 1, 0
    if rest:
        try:
            fold, folds = (int(x) for x in rest.split("of"))
        except ValueError:
            raise ValueError(f"split {name!r}: expected SPLIT@FOLDofFOLDS, e.g. val@1of4") from None
    if split not in SPLITS or rest and split not in ("train-sub", "val"):
        raise ValueError(f"split must be one of {SPLITS} (train-sub and val with @FOLDofFOLDS), got {name!r}")
    if folds < 1 or not 0 <= fold < folds:
        raise ValueError(f"split {name!r}: fold must be in 0..{folds - 1}")
    return split, folds, fold


def held_out_classes(classes: np.ndarray, n_val: int, folds: int = 1, fold: int = 0) -> np.ndarray:
    """The validation classes of fold `fold` of `folds` among the sorted train `classes`. One fold:
    the last `n_val` (the fixed split). With `CONTIGUOUS_FOLDS_FROM` classes or more: the fold-th of
    `folds` contiguous blocks. Fewer: `n_val` classes ending `fold` classes before the last one
    (fold 0 is the fixed split), wrapping around; at most one fold per class."""
    n = len(classes)
    if folds == 1:
        return classes[-n_val:]
    if n >= CONTIGUOUS_FOLDS_FROM:
        return np.array_split(classes, folds)[fold]
    if folds > n:
        raise ValueError(f"{folds} validation folds of {n} train classes: at most {n}")
    start = n - n_val - fold
    return classes[[(start + j) % n for j in range(n_val)]]


class DatasetLayoutError(FileNotFoundError):
    """A data set's files are missing or malformed; the message names the file and the layout."""


class CorruptImageError(OSError):
    """An image file could not be decoded; the message names its path."""


class RetrievalDataset:
    """A zero-shot retrieval split: images of train classes or of held-out test classes.

    ``split``: ``train`` and ``test`` are the standard class-disjoint halves;
    ``train-sub`` and ``val`` divide the train classes again (the last
    ``val_fraction`` of them, at least 2, form ``val``), so hyper-parameters are
    chosen without ever touching test classes; ``val@iofK`` and ``train-sub@iofK`` are
    fold i of K class-disjoint validation folds (`held_out_classes`). Subclasses fill
    ``paths`` and ``labels`` for the whole train or test half in ``_load(half)``.
    """

    name = "base"
    val_fraction = 0.2
    layout = ""
    #: False where `paths` are ids of images held in memory (digits, Fashion-MNIST), not files.
    paths_are_files = True

    def __init__(self, root: str | Path | None, split: str = "train") -> None:
        base, folds, fold = parse_split(split)
        self.root = Path(root) if root is not None else None
        self.split = split
        if base in CLS_SPLITS:
            paths, labels = self._classification_split(base)
        else:
            paths, labels = self._load("test" if base == "test" else "train")
        labels = np.asarray(labels, dtype=np.int64)
        if base in ("train-sub", "val"):
            classes = np.unique(labels)
            n_val = max(2, math.ceil(len(classes) * self.val_fraction))
            val_classes = held_out_classes(classes, n_val, folds, fold)
            keep = np.isin(labels, val_classes) == (base == "val")
            paths = [p for p, k in zip(paths, keep) if k]
            labels = labels[keep]
        self.paths: list[str] = list(paths)
        self.labels: np.ndarray = labels

    def _load(self, half: str) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def _classification_split(self, split: str) -> tuple[list[str], np.ndarray]:
        """cls-train or cls-test: both class halves, the images divided by `cls_test_mask`."""
        train_paths, train_labels = self._load("train")
        test_paths, test_labels = self._load("test")
        paths = list(train_paths) + list(test_paths)
        labels = np.concatenate([np.asarray(train_labels), np.asarray(test_labels)]).astype(np.int64)
        keep = self.cls_test_mask(paths, labels) == (split == "cls-test")
        return [p for p, k in zip(paths, keep) if k], labels[keep]

    def cls_test_mask(self, paths: list[str], labels: np.ndarray) -> np.ndarray:
        """Which images are the classification protocol's test images: a data set's official division
        where it has one (Fashion-MNIST's 10,000 test images), else every CLS_TEST_EVERY-th image of
        each class in file order."""
        mask = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            mask[rows[CLS_TEST_EVERY - 1 :: CLS_TEST_EVERY]] = True
        return mask

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(np.unique(self.labels))

    def load_image(self, i: int) -> Image.Image:
        """The i-th image as RGB (grayscale and CMYK files are converted)."""
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise DatasetLayoutError(f"{self.name}: missing image {path} (expected {self.layout})") from None
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptImageError(f"{self.name}: cannot decode image {path}: {err}") from None

    def fingerprint(self) -> str:
        """Identifies the exact file list, labels and, for image files, each file's size and
        modification time, so a changed data set (even images replaced in place) gets a fresh cache."""
        import hashlib
        import os

        h = hashlib.sha1()
        for p, y in zip(self.paths, self.labels.tolist()):
            h.update(f"{p}\t{y}\n".encode())
            if self.paths_are_files:
                try:
                    st = os.stat(p)
                    h.update(f"{st.st_size}\t{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(b"missing\n")  # reported by name when the image is loaded
        return h.hexdigest()[:16]

    def _require(self, relative: str) -> Path:
        if self.root is None:
            raise DatasetLayoutError(f"{self.name}: a root folder is required (expected {self.layout})")
        path = self.root / relative
        if not path.exists():
            raise DatasetLayoutError(f"{self.name}: missing {relative} under {self.root} (expected {self.layout})")
        return path


def class_range_mask(labels: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return (labels >= lo) & (labels <= hi)
