"""train() in parts: each stage on its own, on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pmlbal.records import config_key
from pmlbal.samplers import MPerClassBatches
from pmlbal.samplers.batches import batches_per_epoch, class_balanced_batches
from pmlbal.train import TrainConfig, build_run, identity, run_record, train_epoch


@pytest.mark.slow
def test_build_run_then_one_epoch_then_the_record(tmp_path):
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=20, samples_per_class=10, results_dir=str(tmp_path),
                      cache_dir=str(tmp_path / "cache"), progress=False)
    with torch.random.fork_rng():
        run = build_run(cfg)
        assert isinstance(run.batches, MPerClassBatches) and run.cfg.backbone == "resnet10t"  # registry defaults
        before = [p.detach().clone() for p in run.model.parameters()]
        initial = run.evaluate()
        entry, steps, seconds, images = train_epoch(run, 1)
    n = batches_per_epoch(len(run.train_set), 20)
    assert entry["epoch"] == 1 and len(steps) == n and images == n * 20 and seconds > 0
    assert math.isfinite(entry["train_loss"]) and entry["train_loss"] == pytest.approx(
        float(torch.stack([s["loss"] for s in steps]).mean()))
    assert {"pos_term", "entropy_term"} <= set(steps[0])  # a balanced loss records both terms per step
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))  # it trained
    record = run_record(run, [entry], steps, initial, initial, 1.0, seconds, images)
    assert record["config_key"] == config_key(identity(run.cfg)) and record["seed"] == 0
    assert record["steps"][0]["loss"] == pytest.approx(float(steps[0]["loss"]))


def test_class_balanced_batches_are_seeded_and_leave_numpy_alone():
    labels = np.repeat(np.arange(6), 10)
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    a = class_balanced_batches(labels, 12, 4, seed=3)
    assert np.random.rand() == expected  # the caller's global numpy state is untouched
    b = class_balanced_batches(labels, 12, 4, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 5
    for batch in a:  # 3 classes x 4 samples
        assert sorted(np.bincount(labels[batch])[np.bincount(labels[batch]) > 0].tolist()) == [4, 4, 4]
