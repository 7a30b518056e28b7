"""cjk-glyphs: the real Debian fonts (which .ci/run installs) for the rendering rules and the split,
miniature font folders for the named errors, and the options and baseline it brought (no flips,
the raw-pixel row)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.data import cjk_glyphs as cj

SCAN = cj.scan_faces(None, Path.home() / ".cache" / "pmlbal")
needs_fonts = pytest.mark.skipif(len(SCAN.faces) < cj.MIN_FACES, reason=(
    f"{len(SCAN.faces)} CJK faces installed, need {cj.MIN_FACES}: {cj.apt_command(cj.FONT_PACKAGES)} (.ci/run does)"))


def _pooled_cosines(images: np.ndarray) -> np.ndarray:
    """Independent reference for the near-duplicate rule: all pairwise cosines at half resolution."""
    x = torch.tensor(images, dtype=torch.float64)[:, None]
    x = torch.nn.functional.avg_pool2d(x, cj.DEDUP_POOL).reshape(len(images), -1)
    x = torch.nn.functional.normalize(x, dim=1)
    return (x @ x.T).numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """20 + 20 classes rendered from the installed fonts, twice, into two empty caches."""
    if len(SCAN.faces) < cj.MIN_FACES:
        pytest.skip("too few CJK faces installed")
    a = cj.load_rendered(None, tmp_path_factory.mktemp("a"), classes=(20, 20), progress=False)
    b = cj.load_rendered(None, tmp_path_factory.mktemp("b"), classes=(20, 20), progress=False)
    return a, b


@needs_fonts
def test_rendering_is_deterministic_and_fingerprinted(small):
    (data, _, fp), (again, _, fp2) = small
    assert fp == fp2
    for key in ("images", "labels", "faces"):
        assert np.array_equal(data[key], again[key])
    chars = cj.eligible_characters(SCAN)
    assert cj.fingerprint(SCAN, chars, (20, 20)) == fp
    assert cj.fingerprint(SCAN, chars, (20, 21)) != fp  # another class count is another data set
    assert cj.fingerprint(SCAN, chars[:-1], (20, 20)) != fp  # and so is another character list


@needs_fonts
def test_classes_are_ideographs_with_distinct_designs(small):
    data = small[0][0]
    images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape[1:] == (cj.SIZE, cj.SIZE)
    assert ((cj.IDEOGRAPHS[0] <= labels) & (labels <= cj.IDEOGRAPHS[1])).all()
    assert len(np.unique(labels)) == 40
    assert (images.reshape(len(images), -1).max(axis=1) >= cj.INK_THRESHOLD).all()  # no blank rendering
    for c in np.unique(labels):
        members = images[labels == c]
        assert len(members) >= cj.MIN_DESIGNS
        cos = _pooled_cosines(members)
        np.fill_diagonal(cos, 0)
        assert cos.max() < cj.NEAR_DUPLICATE_COSINE  # no two renderings of one design
        faces = data["faces"][labels == c]
        assert len(set(faces.tolist())) == len(faces)  # one image per face at most


@needs_fonts
def test_zero_shot_split_and_validation_classes(small, tmp_path, monkeypatch):
    monkeypatch.setenv("PMLBAL_CACHE", str(tmp_path))
    monkeypatch.setattr(cj.CJKGlyphs, "classes", (20, 20))
    splits = {s: cj.CJKGlyphs(None, s) for s in ("train", "test", "train-sub", "val")}
    train, test = set(splits["train"].labels.tolist()), set(splits["test"].labels.tolist())
    assert len(train) == len(test) == 20 and not train & test
    sub, val = set(splits["train-sub"].labels.tolist()), set(splits["val"].labels.tolist())
    assert sub | val == train and not sub & val and len(val) == 4  # the last 20 % of the train classes
    img = splits["test"].load_image(0)
    assert img.size == (cj.SIZE, cj.SIZE) and img.mode == "RGB"
    # The first train classes are the first characters of the permutation that have enough designs.
    order = cj.eligible_characters(SCAN)
    assert splits["train"].labels[0] in order[:40]


@pytest.mark.slow
@needs_fonts
def test_datasets_check_full_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PMLBAL_CACHE", str(tmp_path))
    result = CliRunner().invoke(main, ["datasets", "check", "cjk-glyphs"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("cjk-glyphs")}
    assert int(lines["train"].split()[4]) == cj.TRAIN_CLASSES and int(lines["test"].split()[4]) == cj.TEST_CLASSES
    assert "faces" in lines and "found" in lines["faces"]
    ds = cj.CJKGlyphs(None, "test")
    counts = np.unique(ds.labels, return_counts=True)[1]
    assert np.median(counts) >= 10 and counts.min() >= cj.MIN_DESIGNS


# -- named errors on miniature font folders ----------------------------------------------------------
def _check(root: Path, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["datasets", "check", "cjk-glyphs", "--root", str(root)],
                                env={"PMLBAL_CACHE": str(tmp_path / "cache")})
    return result.exit_code, result.output


def test_empty_folder_is_a_named_error(tmp_path):
    (tmp_path / "fonts").mkdir()
    code, out = _check(tmp_path / "fonts", tmp_path)
    assert code == 1 and "no font files found under" in out and len(out.strip().splitlines()) == 1


@needs_fonts
def test_too_few_faces_is_a_named_error(tmp_path):
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    shutil.copy(SCAN.faces[0].path, fonts)
    code, out = _check(fonts, tmp_path)
    assert code == 1 and "1 faces with at least" in out and f"need {cj.MIN_FACES}" in out


@needs_fonts
def test_truncated_font_file_is_named(tmp_path):
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    src = Path(SCAN.faces[0].path)
    (fonts / src.name).write_bytes(src.read_bytes()[:2000])
    code, out = _check(fonts, tmp_path)
    assert code == 1 and "cannot read font file" in out and src.name in out


def test_font_without_ideographs_counts_as_too_few(tmp_path):
    latin = next((p for p in Path("/usr/share/fonts").rglob("DejaVuSans.ttf")), None)
    if latin is None:
        pytest.skip("no DejaVuSans.ttf installed")
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    shutil.copy(latin, fonts)
    code, out = _check(fonts, tmp_path)
    assert code == 1 and "0 faces" in out and "1 other faces cover too few" in out


def test_missing_packages_are_listed_with_the_apt_command(monkeypatch):
    from pmlbal.data import fonts

    monkeypatch.setattr(fonts, "_fontconfig_files", lambda: [])
    monkeypatch.setattr(fonts, "_folder_files", lambda folders: [])
    files, missing = fonts.font_files(None)
    assert files == {} and set(missing) == set(cj.FONT_PACKAGES)
    assert cj.apt_command(missing).startswith("apt-get install fonts-")


def test_near_duplicate_rule_against_a_naive_loop():
    rng = np.random.default_rng(0)
    base = (rng.random((3, cj.SIZE, cj.SIZE)) > 0.7).astype(np.uint8) * 255
    images = np.stack([base[0], base[0], base[1], np.clip(base[1].astype(int) + 3, 0, 255).astype(np.uint8), base[2]])
    kept = cj.distinct_designs(images)
    cos = _pooled_cosines(images)
    naive = []
    for i in range(len(images)):
        if all(cos[i, j] < cj.NEAR_DUPLICATE_COSINE for j in naive):
            naive.append(i)
    assert kept == naive == [0, 2, 4]


# -- no flips, and the raw-pixel baseline --------------------------------------------------------------
def test_glyphs_are_not_flipped_and_other_data_sets_keep_their_flips():
    from pmlbal.data.gpu_batches import random_resized_crop_flip
    from pmlbal.command import command_for
    from pmlbal.config import TrainConfig, identity

    cfg = TrainConfig(dataset="cjk-glyphs").resolved()
    assert cfg.hflip is False and "--no-hflip" not in command_for(cfg)
    digits = TrainConfig(dataset="digits").resolved()
    assert digits.hflip is True and "hflip" not in identity(digits)  # earlier records keep their key
    assert "hflip" in identity(TrainConfig(dataset="digits", hflip=False).resolved())
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    same = random_resized_crop_flip(images, 8, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1), flip=False)
    assert torch.allclose(same, images.float(), atol=1e-4)
    flipped = [random_resized_crop_flip(images, 8, torch.Generator().manual_seed(s), scale=(1, 1), ratio=(1, 1))
               for s in range(8)]
    assert any(torch.allclose(f[0], images[0].float().flip(-1), atol=1e-4) for f in flipped)


def test_pixel_baseline_matches_a_naive_nearest_neighbour(tmp_path):
    from pmlbal.data.gpu_batches import ImageBank
    from pmlbal.untrained import pixel_metrics

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 4)
    images = (rng.random((6, 1, 8, 8, 3)) * 255 + rng.random((6, 4, 8, 8, 3)) * 90).clip(0, 255).astype(np.uint8)
    images = images.reshape(24, 8, 8, 3)
    eval_set = SimpleNamespace(labels=labels, name="digits", split="test", fingerprint=lambda: "synthetic")
    run = SimpleNamespace(eval_bank=ImageBank(images, "cpu"), eval_set=eval_set, device=torch.device("cpu"),
                          cfg=SimpleNamespace(dataset="digits", cache_dir=str(tmp_path), cache_size=8))
    got = pixel_metrics(run)
    x = images.reshape(24, -1).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    assert got["recall@1"] == pytest.approx(np.mean(labels[sim.argmax(1)] == labels))
    assert pixel_metrics(run) == got  # memoised
    assert list((tmp_path / "untrained").glob("digits-pixels-*.json"))


def test_board_shows_the_pixel_row(tmp_path):
    from pmlbal.leaderboard import build_rows, render_markdown

    def record(seed, loss):
        metrics = {m: 0.5 for m in ("recall@1", "recall@2", "recall@4", "recall@8", "map_at_r", "r_precision")}
        cfg = {"dataset": "digits", "loss": loss, "loss_kwargs": {}, "backbone": "resnet10t", "embedding_dim": 64,
               "batch_size": 50, "epochs": 8, "eval_split": "test", "cache_size": 32, "input_size": 32,
               "pretrained": None}
        return {"config": cfg, "config_key": loss, "seed": seed, "final": metrics, "initial": metrics,
                "pixels": {**metrics, "map_at_r": 0.25}, "command": "pmlbal train", "device": "CPU"}

    rows = build_rows([record(0, "A"), record(1, "A")], "digits")
    pixel = [r for r in rows if r.get("pixels")]
    assert len(pixel) == 1 and pixel[0]["map_at_r"][0] == 0.25
    text = render_markdown(rows, "digits", 2)
    assert "raw pixels (32 px, L2-normalised)" in text and "no network" in text


@needs_fonts
def test_a_first_render_says_what_it_does_before_it_starts(tmp_path, capsys):
    if len(SCAN.faces) < cj.MIN_FACES:
        pytest.skip("too few CJK faces installed")
    cj.load_rendered(None, tmp_path, classes=(4, 4), workers=1, progress=True)
    err = capsys.readouterr().err
    assert f"cjk-glyphs: rendering 8 characters from {len(SCAN.faces)} font faces with 1 process" in err
    cj.load_rendered(None, tmp_path, classes=(4, 4), workers=1, progress=True)  # from the cache: nothing to say
    assert "rendering" not in capsys.readouterr().err
