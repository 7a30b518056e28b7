"""Miniature copies of the official CUB / Cars196 / SOP layouts, built in a temp dir."""

from pathlib import Path

import numpy as np
from PIL import Image


def _jpeg(path: Path, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(20 + seed % 7, 16 + seed % 5, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    (img.convert("L") if mode == "L" else img).save(path, format="JPEG")


def make_cub(root: Path, per_class: int = 2) -> Path:
    base = root / "CUB_200_2011"
    images, labels = [], []
    n = 0
    for c in range(1, 201):
        for j in range(per_class):
            n += 1
            rel = f"{c:03d}.class/img_{n}.jpg"
            _jpeg(base / "images" / rel, n, mode="L" if n == 3 else "RGB")  # one grayscale file, as in CUB
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def make_cars(root: Path, per_class: int = 2) -> Path:
    from scipy.io import savemat

    rows = []
    n = 0
    for c in range(1, 197):
        for _ in range(per_class):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            _jpeg(root / rel, n)
            rows.append((rel, c))
    dtype = [("relative_im_path", "O"), ("class", "O"), ("test", "O")]
    annos = np.array([(r, np.uint8(c) if c < 256 else c, 0) for r, c in rows], dtype=dtype)
    savemat(root / "cars_annos.mat", {"annotations": annos})
    return root


def make_sop(root: Path, train_classes: int = 6, test_classes: int = 5, per_class: int = 2) -> Path:
    n = 0
    for fname, classes, offset in (("Ebay_train.txt", train_classes, 0), ("Ebay_test.txt", test_classes, train_classes)):
        lines = ["image_id class_id super_class_id path"]
        for c in range(offset + 1, offset + classes + 1):
            for j in range(per_class):
                n += 1
                rel = f"bicycle_final/{c}_{j}.JPG"
                _jpeg(root / rel, n)
                lines.append(f"{n} {c} 1 {rel}")
        (root / fname).write_text("\n".join(lines) + "\n")
    return root
