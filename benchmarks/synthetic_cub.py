"""Write a synthetic CUB-200-2011 in the official layout: CUB's image count, classes and JPEG size.

Usage:
    python benchmarks/synthetic_cub.py ROOT [--images 11788] [--classes 200] [--size 500x375]

For throughput figures on a machine without the real data set (the GPU suite): `pmlbal train
--dataset cub --root ROOT` reads it like the real one (classes 1-100 train, 101-200 test). Each
class has its own colour cast over smooth noise, so a trained model retrieves above chance. The
images are written by one process per core; an existing complete layout is kept.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _write(args: tuple[str, int, int, int, int]) -> None:
    from PIL import Image

    path, index, label, width, height = args
    rng = np.random.default_rng(index)
    tint = np.random.default_rng(10_000 + label).integers(40, 215, size=3)
    small = rng.integers(0, 80, size=(height // 8, width // 8, 3)) + tint  # smooth content: CUB-like JPEG sizes
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    img.save(path, quality=90)


def make_cub(root: Path, images: int = 11788, classes: int = 200, size: tuple[int, int] = (500, 375),
             workers: int | None = None) -> Path:
    """Write (or keep, if complete) `images` JPEGs over `classes` classes under root/CUB_200_2011."""
    if classes < 2 or classes % 2 or images < 2 * classes:
        raise ValueError(f"need an even number of classes >= 2 and >= 2 images a class, got {images} over {classes}")
    base = root / "CUB_200_2011"
    labels_file = base / "image_class_labels.txt"
    if labels_file.exists() and len(labels_file.read_text().splitlines()) == images:
        return root
    jobs, lines, label_lines = [], [], []
    for i in range(images):
        label = i % classes + 1  # round robin: class sizes differ by at most one, as CUB's (41-60)
        rel = f"{label:03d}.class_{label:03d}/img_{i + 1:05d}.jpg"
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(base / "images" / rel), i, label, *size))
        lines.append(f"{i + 1} {rel}")
        label_lines.append(f"{i + 1} {label}")
    with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(_write, jobs, chunksize=64))
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    labels_file.write_text("\n".join(label_lines) + "\n")  # last: its presence marks a complete layout
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--images", type=int, default=11788)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--size", default="500x375", help="WIDTHxHEIGHT")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    make_cub(args.root, args.images, args.classes, (width, height))
    print(f"synthetic CUB: {args.images} images, {args.classes} classes, {width}x{height} under {args.root}")


if __name__ == "__main__":
    main()
