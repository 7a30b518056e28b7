"""A run on one validation fold (issue 29): config, identity and the data it builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmlbal.config import TrainConfig, data_splits, identity
from pmlbal.registry import dataset_spec
from pmlbal.build import build_run

FOLD = dict(eval_split="val", train_split="train-sub")


def test_one_fold_is_the_fixed_split_and_keeps_the_identity_of_earlier_runs():
    cfg = TrainConfig(**FOLD).resolved()
    assert data_splits(cfg) == ("train-sub", "val") and data_splits(TrainConfig()) == ("train", "test")
    assert "val_folds" not in identity(cfg) and "val_fold" not in identity(cfg)
    folded = TrainConfig(**FOLD, val_folds=3, val_fold=2).resolved()
    assert data_splits(folded) == ("train-sub@2of3", "val@2of3")
    assert identity(folded)["val_folds"] == 3 and identity(folded)["val_fold"] == 2


@pytest.mark.parametrize("kw, word", [
    (dict(val_folds=0), "val_folds must be >= 1"),
    (dict(val_folds=3, val_fold=3), "val_fold in 0..val_folds-1"),
    (dict(val_folds=2, val_fold=-1), "val_fold in 0..val_folds-1"),
    (dict(val_folds=2, eval_split="test"), "need eval_split val"),
    (dict(val_folds=2, cv_folds=2, **FOLD), "use one of them"),
])
def test_bad_fold_settings_are_refused_naming_the_field(kw, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**kw).resolved()


def test_every_data_set_registers_its_default_number_of_folds():
    # MLRC's 4 contiguous folds where the train classes are many; overlapping 2-class windows on the
    # 5 train classes of digits and Fashion-MNIST; one fixed split on cjk-glyphs, whose 200 validation
    # classes already rank like test (docs/tuner.md, "Folds").
    assert {n: dataset_spec(n).val_folds for n in ("digits", "fashion-mnist", "cjk-glyphs", "cub", "cars", "sop")} == {
        "digits": 3, "fashion-mnist": 3, "cjk-glyphs": 1, "cub": 4, "cars": 4, "sop": 4}


def test_a_fold_run_trains_and_evaluates_on_that_folds_classes(tmp_path):
    cfg = TrainConfig(**FOLD, val_folds=3, val_fold=1, epochs=1, batch_size=20, results_dir=str(tmp_path),
                      cache_dir=str(tmp_path / "cache"), progress=False)
    with torch.random.fork_rng():
        run = build_run(cfg)
    assert sorted(np.unique(run.eval_set.labels)) == [2, 3]  # the fixed split's window moved one class down
    assert sorted(np.unique(run.train_set.labels)) == [0, 1, 4]
    assert run.cfg.samples_per_class == 10  # the tuning split's rule: 2 classes of batch/2
