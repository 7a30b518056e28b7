"""A trial on K validation folds (pmlbal.tune.folds): its runs' folds and seeds, its value and
spread, the budget in runs, and the final run's samples per class."""

from __future__ import annotations

import pytest

from pmlbal.config import TrainConfig
from pmlbal.registry import classes_per_batch
from pmlbal.tune.budget import trial_budget
from pmlbal.tune.folds import fold_configs, score_folds, train_trial
from pmlbal.tune.spaces import final_samples_per_class, samples_per_class

TRIAL = TrainConfig(train_split="train-sub", eval_split="val", val_folds=3, seed=10)


def test_each_fold_of_each_run_has_its_own_seed_and_one_fold_keeps_the_old_seeds():
    runs = [fold_configs(TRIAL, run) for run in range(2)]
    assert [(c.val_fold, c.seed) for c in runs[0] + runs[1]] == [(0, 10), (1, 11), (2, 12), (0, 13), (1, 14), (2, 15)]
    one = TrainConfig(train_split="train-sub", eval_split="val", seed=10)
    assert [(c.val_fold, c.seed) for c in fold_configs(one, 2)] == [(0, 12)]  # seed + run, as before folds


def record(run_id, final, initial):
    return {"run_id": run_id, "final": {"map_at_r": final}, "initial": {"map_at_r": initial}}


def test_a_trials_value_is_the_folds_mean_and_it_keeps_their_spread_and_gain():
    score = score_folds([record("a", 0.5, 0.25), record("b", 0.75, 0.5), record("c", 1.0, 0.5)], "map_at_r")
    assert score.value == pytest.approx(0.75) and score.spread == pytest.approx(0.25)
    attrs = score.attrs()
    assert attrs["fold_run_ids"] == ["a", "b", "c"] and attrs["run_id"] == "a"
    assert attrs["val_gain"] == pytest.approx((0.25 + 0.25 + 0.5) / 3) and attrs["fold_values"] == [0.5, 0.75, 1.0]
    assert score_folds([record("a", 0.5, 0.25)], "map_at_r").spread == 0.0


def test_train_trial_trains_every_fold_with_reuse():
    seen = []

    def fake_train(cfg, reuse):
        seen.append((cfg.val_fold, cfg.seed, reuse, cfg.samples_per_class))
        return record(f"r{cfg.val_fold}", 0.1 * (cfg.val_fold + 1), 0.0)

    score = train_trial(TRIAL, 1, "map_at_r", fake_train)
    assert seen == [(0, 13, True, 25), (1, 14, True, 25), (2, 15, True, 25)]  # resolved: train-sub's m
    assert score.value == pytest.approx(0.2)


def test_the_budget_counts_training_runs_so_a_trial_on_k_folds_costs_k():
    assert trial_budget(24, 3) == 8 and trial_budget(4, 1) == 4 and trial_budget(5, 2) == 2
    with pytest.raises(ValueError, match="--budget 4 or more"):
        trial_budget(3, 4)


def test_a_tuned_batch_trains_its_final_run_on_as_many_classes_as_a_default_batch():
    # digits' tuning split has 3 classes (m = batch/2: 2 classes a batch); its default batch holds 5.
    assert samples_per_class("digits", 32) == 16
    assert {b: b // final_samples_per_class("digits", b) for b in (8, 16, 32, 64)} == {8: 4, 16: 4, 32: 4, 64: 4}
    assert final_samples_per_class("digits", 50) == 10  # the default batch: the default m
    assert final_samples_per_class("cub", 64) == samples_per_class("cub", 64) == 4  # many classes: one rule
    assert classes_per_batch(4)(6) == 2 and classes_per_batch(2)(6) == 3
    with pytest.raises(ValueError, match="no divisor"):
        classes_per_batch(4)(1)
