"""Loaders on miniature official layouts: splits, counts, cache reuse, named errors."""

import numpy as np
import pytest
import torch

from pmlbal.data import CorruptImageError, DatasetLayoutError, create
from pmlbal.data.cache import cache_path, load_or_build
from pmlbal.data.gpu_batches import ImageBank, center_crop_resize, normalize, random_resized_crop_flip
from tests.data.layouts import make_cars, make_cub, make_sop


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    return make_cub(tmp_path_factory.mktemp("cub"))


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory):
    return make_cars(tmp_path_factory.mktemp("cars"))


@pytest.fixture(scope="module")
def sop_root(tmp_path_factory):
    return make_sop(tmp_path_factory.mktemp("sop"))


def test_cub_standard_split(cub_root):
    train, test = create("cub", cub_root, "train"), create("cub", cub_root, "test")
    assert len(train) == 200 and len(test) == 200
    assert set(train.labels.tolist()) == set(range(100)) and set(test.labels.tolist()) == set(range(100, 200))
    assert train.load_image(2).mode == "RGB"  # the grayscale file comes back as RGB


def test_cars_standard_split(cars_root):
    train, test = create("cars", cars_root, "train"), create("cars", cars_root, "test")
    assert len(train) == 196 and train.num_classes == 98 and test.num_classes == 98
    assert train.labels.max() == 97 and test.labels.min() == 98


def test_sop_split_from_files(sop_root):
    train, test = create("sop", sop_root, "train"), create("sop", sop_root, "test")
    assert (len(train), train.num_classes, len(test), test.num_classes) == (12, 6, 10, 5)


@pytest.mark.parametrize("name", ["cub", "digits"])
def test_validation_split_is_class_disjoint(name, cub_root):
    root = cub_root if name == "cub" else None
    sub, val, full = (create(name, root, s) for s in ("train-sub", "val", "train"))
    assert not set(sub.labels.tolist()) & set(val.labels.tolist())
    assert len(sub) + len(val) == len(full) and val.num_classes >= 2


def test_digits_counts():
    train, test = create("digits", None, "train"), create("digits", None, "test")
    assert set(train.labels.tolist()) == {0, 1, 2, 3, 4} and set(test.labels.tolist()) == {5, 6, 7, 8, 9}
    assert len(train) + len(test) == 1797


def test_cache_is_built_once_and_reused(cub_root, tmp_path, monkeypatch):
    ds = create("cub", cub_root, "test")
    arr = load_or_build(ds, 12, tmp_path, progress=False)
    assert arr.shape == (200, 12, 12, 3) and arr.dtype == np.uint8
    calls = []
    monkeypatch.setattr(type(ds), "load_image", lambda self, i: calls.append(i))
    again = load_or_build(ds, 12, tmp_path, progress=False)
    assert calls == [] and np.array_equal(arr, again)
    assert cache_path(ds, 12, tmp_path).exists() and not list(tmp_path.glob(".*tmp"))


def test_missing_index_file_is_named(tmp_path):
    root = make_sop(tmp_path)
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="missing Ebay_test.txt"):
        create("sop", root, "test")
    with pytest.raises(DatasetLayoutError, match="images.txt"):
        create("cub", tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="cars_annos.mat"):
        create("cars", tmp_path, "train")


def test_deleted_image_and_corrupt_image_are_named(tmp_path):
    root = make_sop(tmp_path)
    ds = create("sop", root, "train")
    victim = ds.paths[3]
    __import__("os").unlink(victim)
    with pytest.raises(DatasetLayoutError, match=victim.split("/")[-1]):
        load_or_build(ds, 8, tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("*.npy"))  # no half-written cache left behind
    with open(ds.paths[0], "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(CorruptImageError, match=ds.paths[0]):
        ds.load_image(0)


def test_malformed_files_are_reported(tmp_path):
    root = make_sop(tmp_path)
    (root / "Ebay_train.txt").write_text("image_id class_id super_class_id path\n1 x 1\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        create("sop", root, "train")
    (root / "Ebay_train.txt").write_text("no header\n")
    with pytest.raises(DatasetLayoutError, match="header"):
        create("sop", root, "train")
    with pytest.raises(ValueError, match="split"):
        create("sop", root, "everything")
    with pytest.raises(ValueError, match="unknown data set"):
        create("imagenet", root, "train")


def test_device_augmentation_shapes_and_determinism():
    imgs = np.random.default_rng(0).integers(0, 255, (6, 40, 40, 3), dtype=np.uint8)
    bank = ImageBank(imgs, "cpu")
    batch = bank.take(torch.tensor([0, 2, 4]))
    a = random_resized_crop_flip(batch, 24, torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(batch, 24, torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 24, 24) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 255
    full = random_resized_crop_flip(batch, 40, torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped_or_not = [torch.allclose(full[i], batch[i].float(), atol=1) or torch.allclose(full[i], batch[i].float().flip(-1), atol=1)
                      for i in range(3)]
    assert all(flipped_or_not)  # a full-image crop is the image itself, possibly mirrored
    ev = center_crop_resize(batch, 16)
    assert ev.shape == (3, 3, 16, 16)
    z = normalize(torch.full((1, 3, 2, 2), 255.0 * 0.5), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(z, torch.zeros_like(z))


@pytest.mark.parametrize("damage", ["truncate", "other-shape"])
def test_a_damaged_cache_is_named_removed_and_decoded_again(tmp_path, damage):
    from pmlbal.data import create
    from pmlbal.data.cache import cache_path, load_or_build

    ds = create("digits", None, "test")
    first = np.array(load_or_build(ds, 16, tmp_path, progress=False))
    path = cache_path(ds, 16, tmp_path)
    if damage == "truncate":  # what a full disk or an interrupted copy leaves
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.save(path, np.zeros((3, 16, 16, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match=f"decoded-image cache {path} is damaged"):
        again = load_or_build(ds, 16, tmp_path, progress=False)
    assert np.array_equal(np.array(again), first)
