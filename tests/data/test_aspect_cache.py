"""The aspect-preserving training cache: whole images, valid boxes, crops that reach every edge."""

import numpy as np
import pytest
import torch
from PIL import Image

from pmlbal.data.base import RetrievalDataset
from pmlbal.data.cache import (aspect_canvas, boxes_path, cache_path, load_or_build, load_or_build_aspect,
                               square_resize)
from pmlbal.data.gpu_batches import ImageBank, random_resized_crop_flip, sample_crop_boxes

SIZES = [(400, 200), (150, 300), (64, 64)]  # (w, h): a wide car, a tall product, a square


class Shapes(RetrievalDataset):
    """Images held in memory: a horizontal/vertical ramp, so a pixel's value says where it came from."""

    name = "shapes"
    paths_are_files = False

    def _load(self, half):
        return [f"{w}x{h}" for w, h in SIZES], np.arange(len(SIZES))

    def load_image(self, i):
        w, h = SIZES[i]
        x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
        y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
        return Image.fromarray(np.stack([x, y, np.full_like(x, 100)], -1).astype(np.uint8))


@pytest.fixture()
def cache(tmp_path):
    return load_or_build_aspect(Shapes(None, "train"), 32, tmp_path, progress=False)


def test_aspect_cache_keeps_each_whole_image_and_its_box(cache, tmp_path):
    images, boxes = cache
    side = aspect_canvas(32)
    assert side == 43 and images.shape == (3, side, side, 3) and boxes.dtype == np.int32
    # shorter side 32 unless the longer side would leave the canvas; aspect ratio kept
    assert boxes.tolist() == [[0, 0, 43, 22], [0, 0, 22, 43], [0, 0, 32, 32]]
    for (w, h), (_, _, bw, bh), img in zip(SIZES, boxes, images):
        assert abs(bw / bh - w / h) < 0.05
        ref = np.asarray(Shapes(None, "train").load_image(SIZES.index((w, h))).resize((bw, bh), Image.BILINEAR))
        assert np.array_equal(img[:bh, :bw], ref)
        assert np.array_equal(img[:bh, bw:], np.repeat(ref[:, -1:], side - bw, 1))  # edge pixels repeated
    # written once, boxes beside the images, the square cache's name untouched
    ds = Shapes(None, "train")
    assert cache_path(ds, 32, tmp_path, "aspect").exists() and boxes_path(cache_path(ds, 32, tmp_path, "aspect")).exists()
    assert not cache_path(ds, 32, tmp_path).exists() and not list(tmp_path.glob(".*tmp"))


def test_crops_cover_the_whole_image_across_draws_and_never_leave_it(cache):
    images, boxes = cache
    valid = torch.as_tensor(boxes, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_crop_boxes(3, 43, 43, gen, (0.08, 1.0), valid=valid) for _ in range(3000)])
    lo, hi = draws[..., :2].amin(0), draws[..., 2:].amax(0)  # [3, 2] each: x, y
    assert torch.all(draws[..., :2] >= valid[None, :, :2] - 1e-4) and torch.all(draws[..., 2:] <= valid[None, :, 2:] + 1e-4)
    assert torch.all(lo < 0.2) and torch.all(hi > valid[:, 2:] - 0.2)  # every edge reached
    # In the original image's pixels the wide image's crops span its full 400 px; the square
    # cache keeps only its centre 200 x 200, so crops from it never leave x in [100, 300].
    w, h = SIZES[0]
    span = (hi[0, 0] - lo[0, 0]) * w / float(valid[0, 2])
    assert span > 0.99 * w
    square = square_resize(Shapes(None, "train").load_image(0), 32)
    assert square.shape == (32, 32, 3) and abs(int(square[0, 0, 0]) - 255 * 100 / 399) < 3  # it starts at x = 100


def test_crops_see_only_the_image():
    from pmlbal.data.cache import aspect_resize

    canvases, boxes = zip(*(aspect_resize(Image.new("RGB", size, (200, 90, 10)), 32) for size in SIZES))
    bank = ImageBank(np.stack(canvases), "cpu", np.array(boxes))
    idx = torch.tensor([0, 1, 2] * 20)
    out = random_resized_crop_flip(bank.take(idx), 24, torch.Generator().manual_seed(3), (0.05, 1.0),
                                   valid=bank.take_boxes(idx))
    # Bilinear samples at a box's border reach one pixel past it: the repeated edge, not a margin.
    expected = torch.tensor([200.0, 90.0, 10.0]).view(1, 3, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)


def test_square_cache_and_whole_frame_crops_are_unchanged(tmp_path):
    ds = Shapes(None, "train")
    assert cache_path(ds, 32, tmp_path).name == f"shapes-train-32px-{ds.fingerprint()}.npy"
    arr = load_or_build(ds, 32, tmp_path, progress=False)
    bank = ImageBank(arr, "cpu")
    idx = torch.tensor([0, 1, 2])
    assert bank.take_boxes(idx) is None
    a = random_resized_crop_flip(bank.take(idx), 16, torch.Generator().manual_seed(5))
    full = torch.tensor([[0, 0, 32, 32]] * 3, dtype=torch.float32)
    b = random_resized_crop_flip(bank.take(idx), 16, torch.Generator().manual_seed(5), valid=full)
    assert torch.equal(a, b)  # a whole-frame box is the old behaviour, draw for draw
