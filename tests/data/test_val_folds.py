"""Class-disjoint validation folds of the train classes."""

import numpy as np
import pytest

from pmlbal.data import create
from pmlbal.data.base import CONTIGUOUS_FOLDS_FROM, fold_split, held_out_classes, parse_split


def test_fold_names_round_trip_and_one_fold_is_the_fixed_split():
    assert fold_split("val") == "val" and fold_split("train-sub", 1, 0) == "train-sub"
    assert fold_split("val", 4, 1) == "val@1of4"
    assert parse_split("val@1of4") == ("val", 4, 1) and parse_split("test") == ("test", 1, 0)
    for bad, message in [("val@4of4", "fold must be in 0..3"), ("test@0of2", "train-sub and val"),
                         ("val@x", "expected SPLIT@FOLDofFOLDS"), ("valid", "split must be one of")]:
        with pytest.raises(ValueError, match=message):
            parse_split(bad)
    with pytest.raises(ValueError, match="train-sub or val"):
        fold_split("test", 2, 1)


def test_many_classes_fold_into_contiguous_blocks_that_cover_them_once():
    classes = np.arange(CONTIGUOUS_FOLDS_FROM + 10)
    folds = [held_out_classes(classes, 10, 4, i) for i in range(4)]
    assert np.array_equal(np.sort(np.concatenate(folds)), classes)
    assert all(np.all(np.diff(f) == 1) for f in folds)
    assert np.array_equal(held_out_classes(classes, 10), classes[-10:])  # one fold: the fixed split


def test_few_classes_fold_into_shifted_windows_of_the_fixed_splits_size():
    classes = np.arange(5)
    folds = [held_out_classes(classes, 2, 4, i).tolist() for i in range(4)]
    assert folds == [[3, 4], [2, 3], [1, 2], [0, 1]]  # fold 0 is the fixed split; every class validated
    assert held_out_classes(classes, 2, 5, 4).tolist() == [4, 0]
    with pytest.raises(ValueError, match="6 validation folds of 5 train classes"):
        held_out_classes(classes, 2, 6, 0)


def test_a_fold_of_digits_trains_and_validates_on_disjoint_train_classes():
    train, val = create("digits", split="train-sub@1of4"), create("digits", split="val@1of4")
    assert sorted(np.unique(val.labels)) == [2, 3] and sorted(np.unique(train.labels)) == [0, 1, 4]
    assert len(train) + len(val) == len(create("digits", split="train"))
    assert np.array_equal(create("digits", split="val").labels, create("digits", split="val@0of4").labels)
