"""Decode once: every image of a split, resized to a square, in one uint8 .npy file (memory-mappable)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .base import RetrievalDataset

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


def cache_path(dataset: RetrievalDataset, size: int, cache_dir: str | Path | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{dataset.name}-{dataset.split}-{size}px-{dataset.fingerprint()}.npy"


def load_or_build(
    dataset: RetrievalDataset,
    size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The split's images as a read-only uint8 memmap [N, size, size, 3], decoding them only once.

    The file is keyed by data set, split, size and a fingerprint of the file list, and is
    written to a temporary name, fsync'ed and renamed, so a crash never leaves a
    half-written cache that a later run would trust.
    """
    path = cache_path(dataset, size, cache_dir)
    if path.exists():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), size, size, 3))
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            images = pool.map(lambda i: square_resize(dataset.load_image(i), size), range(len(dataset)))
            for i, arr in enumerate(tqdm(images, total=len(dataset), desc=f"caching {dataset.name}/{dataset.split} {size}px",
                                         disable=None if progress else True, leave=False)):
                out[i] = arr
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        meta = {"dataset": dataset.name, "split": dataset.split, "size": size, "count": len(dataset)}
        path.with_suffix(".json").write_text(json.dumps(meta))
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(path, mmap_mode="r")
