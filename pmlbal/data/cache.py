"""Decode once: every image of a split in one uint8 .npy file (memory-mappable).

Two layouts: ``square`` (shorter side resized to `size`, centre-cropped to size x size: the test view,
and today's training cache) and ``aspect`` (the whole image, aspect ratio kept, on a larger square
canvas with its valid box recorded, so training crops can sample every part of the image).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..files import atomic_path, atomic_write, atomic_write_text
from .base import RetrievalDataset

#: Training cache layouts (``TrainConfig.cache_mode``).
CACHE_MODES = ("square", "aspect")

def default_cache_dir() -> Path:
    """$PMLBAL_CACHE, else ~/.cache/pmlbal; read at each call, so setting the variable later counts."""
    return Path(os.environ.get("PMLBAL_CACHE", Path.home() / ".cache" / "pmlbal"))


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size` and centre-crop to size x size (uint8 HWC)."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def aspect_canvas(size: int) -> int:
    """Side of the aspect cache's canvas: a 4:3 image (CUB's usual shape) keeps a `size`-pixel short side."""
    return math.ceil(size * 4 / 3)


def aspect_resize(img: Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The whole image, aspect ratio kept, at the top-left of an `aspect_canvas(size)` square: its
    shorter side becomes `size` unless the longer side would then leave the canvas (wide cars, tall
    products), in which case the longer side fills it. The rest of the canvas repeats the edge
    pixels, so bilinear samples at the valid box's border see the image, never a black margin.
    Returns (uint8 HWC canvas, valid box x0, y0, x1, y1 in canvas pixels)."""
    side = aspect_canvas(size)
    w, h = img.size
    scale = min(size / min(w, h), side / max(w, h))
    nw, nh = min(side, max(1, round(w * scale))), min(side, max(1, round(h * scale)))
    resized = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.uint8)
    return np.pad(resized, ((0, side - nh), (0, side - nw), (0, 0)), mode="edge"), (0, 0, nw, nh)


def cache_path(dataset: RetrievalDataset, size: int, cache_dir: str | Path | None = None, mode: str = "square") -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # The square cache keeps its historical name, so existing caches stay valid.
    layout = "" if mode == "square" else f"-{mode}"
    return folder / f"{dataset.name}-{dataset.split}-{size}px{layout}-{dataset.fingerprint()}.npy"


def boxes_path(images: Path) -> Path:
    return images.with_name(images.stem + ".boxes.npy")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.<name>.npy.<pid>.tmp` files of processes of this host that are gone (killed
    while writing a cache: each can be gigabytes); returns what was removed."""
    from ..procs import remove_dead_temporaries

    return remove_dead_temporaries(folder, ".*.npy.*.tmp")


def load_or_build(
    dataset: RetrievalDataset,
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The split's images as a read-only uint8 memmap [N, size, size, 3], decoding them only once.

    The file is keyed by data set, split, size and a fingerprint of the file list, labels, file
    sizes and modification times, and is written to a temporary name, fsync'ed and renamed, so a
    crash never leaves a half-written cache that a later run would trust; the temporary files of
    killed processes are removed when the next cache is built.
    """
    path = cache_path(dataset, size, cache_dir)
    images = _open(path, (len(dataset), size, size, 3))
    if images is None:
        _build(dataset, path, size, lambda img: (square_resize(img, size), None), workers, progress)
        images = _open(path, (len(dataset), size, size, 3), fail=True)
    return images


def _open(path: Path, shape: tuple[int, ...], fail: bool = False) -> np.ndarray | None:
    """The cache file at `path` memory-mapped, checked against the split's shape; None when it is
    missing, or damaged (truncated by a full disk or a copy cut short: then it is removed, with a
    warning naming it, so the caller decodes the split again)."""
    if not path.exists():
        return None
    try:
        images = np.load(path, mmap_mode="r")
        if images.shape == shape and images.dtype == np.uint8:
            return images
        problem = f"holds {images.dtype} {images.shape}, the split needs uint8 {shape}"
    except (OSError, ValueError, EOFError) as err:
        problem = str(err)
    if fail:
        raise OSError(f"decoded-image cache {path} is damaged right after it was written ({problem}); "
                      f"check the disk and delete the file")
    import warnings

    warnings.warn(f"decoded-image cache {path} is damaged ({problem}); decoding the split again", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def load_or_build_aspect(
    dataset: RetrievalDataset,
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The split's images as `aspect_resize` gives them: (read-only uint8 memmap [N, S, S, 3] with
    S = `aspect_canvas(size)`, int32 valid boxes [N, 4] as x0, y0, x1, y1), decoded only once.

    The boxes file is renamed into place before the images file, so an images file on disk
    always has its boxes.
    """
    path = cache_path(dataset, size, cache_dir, mode="aspect")
    side = aspect_canvas(size)
    images = _open(path, (len(dataset), side, side, 3))
    if images is None:
        _build(dataset, path, side, lambda img: aspect_resize(img, size), workers, progress, with_boxes=True)
        images = _open(path, (len(dataset), side, side, 3), fail=True)
    return images, np.load(boxes_path(path))


def _build(dataset: RetrievalDataset, path: Path, side: int, convert, workers: int | None, progress: bool,
           with_boxes: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    boxes = np.zeros((len(dataset), 4), dtype=np.int32)
    # The images are renamed into place last: their file is what marks a cache complete.
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), side, side, 3))
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            images = pool.map(lambda i: convert(dataset.load_image(i)), range(len(dataset)))
            for i, (arr, box) in enumerate(tqdm(images, total=len(dataset),
                                                desc=f"caching {dataset.name}/{dataset.split} {side}px",
                                                disable=None if progress else True, leave=False)):
                out[i] = arr
                if box is not None:
                    boxes[i] = box
        out.flush()
        del out
        if with_boxes:
            atomic_write(boxes_path(path), lambda f: np.save(f, boxes))
    meta = {"dataset": dataset.name, "split": dataset.split, "size": side, "count": len(dataset)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta))
