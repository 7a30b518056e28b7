"""Fashion-MNIST from its official IDX files: the real files (Debian's dataset-fashion-mnist, which
.ci/run installs), and miniature, truncated and foreign copies for the named errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.data import DatasetLayoutError, create
from pmlbal.data.fashion_mnist import DEBIAN_ROOT, FILES, TRAIN_CAP_PER_CLASS, default_root, read_idx

REAL = DEBIAN_ROOT if (DEBIAN_ROOT / "train-images-idx3-ubyte.gz").is_file() else None
needs_real = pytest.mark.skipif(REAL is None, reason=f"no Fashion-MNIST files under {DEBIAN_ROOT}: "
                                                      "apt-get install dataset-fashion-mnist (.ci/run does)")


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = True) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def miniature(root: Path, per_class: int = 3, gz: bool = True) -> Path:
    """The four official files with `per_class` images of each class in each part."""
    root.mkdir(parents=True, exist_ok=True)
    for part, (img, lab) in FILES.items():
        labels = np.repeat(np.arange(10), per_class)
        images = (labels[:, None, None] * 20 + np.zeros((1, 28, 28))).astype(np.uint8)
        write_idx(root / (img + (".gz" if gz else "")), images, 2051, gz)
        write_idx(root / (lab + (".gz" if gz else "")), labels, 2049, gz)
    return root


@needs_real
def test_real_files_class_counts_and_zero_shot_split():
    train, test = create("fashion-mnist", REAL, "train"), create("fashion-mnist", REAL, "test")
    assert sorted(set(test.labels.tolist())) == [5, 6, 7, 8, 9]
    assert np.bincount(test.labels, minlength=10)[5:].tolist() == [7000] * 5  # complete: train + t10k images
    assert np.bincount(train.labels, minlength=10)[:5].tolist() == [TRAIN_CAP_PER_CLASS] * 5  # documented cap
    sub, val = create("fashion-mnist", REAL, "train-sub"), create("fashion-mnist", REAL, "val")
    assert set(sub.labels.tolist()) == {0, 1, 2} and set(val.labels.tolist()) == {3, 4}  # class-disjoint
    assert len(val) == 2 * TRAIN_CAP_PER_CLASS  # val is capped like train (tuning trials stay short)
    assert np.bincount(sub.labels).tolist() == [TRAIN_CAP_PER_CLASS] * 3
    image = np.asarray(test.load_image(0))
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8


@needs_real
def test_uncapped_halves_hold_35000_images_each(monkeypatch):
    from pmlbal.data.fashion_mnist import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "train_cap_per_class", None)
    train = create("fashion-mnist", REAL, "train")
    assert len(train) == 35000 and np.bincount(train.labels).tolist() == [7000] * 5


def test_miniature_gzipped_and_plain_files(tmp_path):
    for gz in (True, False):
        root = miniature(tmp_path / f"fm-{gz}", gz=gz)
        train, test = create("fashion-mnist", root, "train"), create("fashion-mnist", root, "test")
        assert len(train) == len(test) == 5 * 3 * 2  # both files' images of each class
        assert np.asarray(test.load_image(0))[0, 0, 0] == 5 * 20


def test_default_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PMLBAL_FASHION_MNIST", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("PMLBAL_FASHION_MNIST")
    assert default_root() == (DEBIAN_ROOT if DEBIAN_ROOT.is_dir() else None)


@pytest.mark.parametrize("damage, word", [
    ("missing", "missing t10k-labels-idx1-ubyte.gz"),
    ("truncated", "truncated"),
    ("magic", "not an IDX label file"),
    ("not gzip", "cannot read"),
])
def test_damaged_files_are_named(tmp_path, damage, word):
    root = miniature(tmp_path / "fm")
    target = root / "t10k-labels-idx1-ubyte.gz"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-5]))
    elif damage == "magic":
        write_idx(target, np.zeros((30, 28, 28)), 2051)  # an image file where the labels belong
    else:
        target.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetLayoutError, match=word) as err:
        create("fashion-mnist", root, "test")
    assert "t10k-labels-idx1-ubyte" in str(err.value)


def test_read_idx_checks_shape_against_size(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((4, 28, 28)), 2051)
    assert read_idx(path, 2051).shape == (4, 28, 28)
    raw = gzip.decompress(path.read_bytes()) + b"\x00"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetLayoutError, match="truncated or padded"):
        read_idx(path, 2051)


@needs_real
def test_datasets_check_on_the_real_files():
    result = CliRunner().invoke(main, ["datasets", "check", "fashion-mnist", "--root", str(REAL)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["fashion-mnist", "train", str(5 * TRAIN_CAP_PER_CLASS), "images", "5", "classes"]
    assert lines[1].split() == ["fashion-mnist", "test", "35000", "images", "5", "classes"]


def test_datasets_check_names_a_missing_file(tmp_path):
    root = miniature(tmp_path / "fm")
    shutil.move(root / "train-images-idx3-ubyte.gz", tmp_path / "elsewhere.gz")
    result = CliRunner().invoke(main, ["datasets", "check", "fashion-mnist", "--root", str(root)])
    assert result.exit_code != 0 and "missing train-images-idx3-ubyte.gz" in result.output
    assert "Traceback" not in result.output


def test_validation_run_defaults_fit_train_sub():
    """train-sub has 3 classes: a validation run without an explicit m takes the data set's tuning
    rule (m = batch / 2, 2 classes a batch) instead of the default batch's 4 classes."""
    from pmlbal.config import TrainConfig

    for dataset in ("fashion-mnist", "digits"):
        cfg = TrainConfig(dataset=dataset, train_split="train-sub", eval_split="val").resolved()
        assert cfg.batch_size // cfg.samples_per_class == 2
        test_cfg = TrainConfig(dataset=dataset).resolved()
        assert test_cfg.batch_size // test_cfg.samples_per_class > 2  # the test-split default is untouched
        given = TrainConfig(dataset=dataset, train_split="train-sub", eval_split="val", samples_per_class=4,
                            batch_size=8).resolved()
        assert given.samples_per_class == 4


def test_the_classification_protocol_is_the_official_division_with_every_class_uncapped(tmp_path):
    """--task ssl: cls-train is the train files' images, cls-test the t10k files', all ten classes in both."""
    root = miniature(tmp_path / "fm", per_class=4)
    train, test = create("fashion-mnist", root, "cls-train"), create("fashion-mnist", root, "cls-test")
    assert np.bincount(train.labels).tolist() == [4] * 10 and np.bincount(test.labels).tolist() == [4] * 10
    assert all(int(p.rsplit("/", 1)[1]) < 40 for p in train.paths)
    assert all(int(p.rsplit("/", 1)[1]) >= 40 for p in test.paths)


@needs_real
def test_real_classification_protocol_is_60000_and_10000_images():
    train, test = create("fashion-mnist", REAL, "cls-train"), create("fashion-mnist", REAL, "cls-test")
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
