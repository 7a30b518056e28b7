"""train() in parts: each stage on its own, on digits."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch

from pmlbal.records import run_key
from pmlbal.samplers import MPerClassBatches
from pmlbal.samplers.batches import batches_per_epoch, class_balanced_batches
from pmlbal.build import build_run
from pmlbal.config import TrainConfig, identity
from pmlbal.loop import train_epoch
from pmlbal.provenance import run_record


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
    assert record["config_key"] == run_key(run.cfg) and record["seed"] == 0
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


def _digits(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(dataset="digits", epochs=2, batch_size=20, samples_per_class=10, results_dir=str(tmp_path),
                       cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def test_per_group_learning_rates_reach_the_optimizer(tmp_path):
    from pytorch_metric_learning.losses import ProxyAnchorLoss

    with torch.random.fork_rng():
        run = build_run(_digits(tmp_path, loss="ProxyAnchorLoss", lr=2e-4, head_lr=1e-3))
        default = build_run(_digits(tmp_path, loss="ProxyAnchorLoss", lr=2e-4, loss_lr=5e-3, optimizer="rmsprop"))
    # num_classes (the 5 training digits) and embedding_size come from the data and the model
    assert isinstance(run.loss_fn, ProxyAnchorLoss) and tuple(run.loss_fn.proxies.shape) == (5, run.cfg.embedding_dim)
    groups = {g["name"]: g for g in run.opt.param_groups}  # initial_lr: the rate the schedule scales
    assert groups["trunk"]["initial_lr"] == 2e-4 and groups["head"]["initial_lr"] == 1e-3
    assert groups["loss"]["initial_lr"] == pytest.approx(100 * 2e-4)  # Proxy-Anchor's proxies at 100x
    assert groups["loss"]["params"][0] is run.loss_fn.proxies
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in run.model.head.parameters()}
    assert sum(len(g["params"]) for g in run.opt.param_groups) == len(
        [p for p in list(run.model.parameters()) + list(run.loss_fn.parameters()) if p.requires_grad])
    assert isinstance(run.opt, torch.optim.AdamW) and isinstance(default.opt, torch.optim.RMSprop)
    assert {g["name"]: g["initial_lr"] for g in default.opt.param_groups} == {"trunk": 2e-4, "head": 2e-4, "loss": 5e-3}


def test_a_frozen_trunk_epoch_trains_only_head_and_proxies_then_clips(tmp_path):
    with torch.random.fork_rng():
        run = build_run(_digits(tmp_path, loss="ProxyAnchorLoss", freeze_trunk_epochs=1, clip_grad_value=1e-3,
                                schedule="constant", warmup_epochs=0.0))
        full = run.batches.epoch
        run.batches.epoch = lambda n, embed: full(n, embed)[:2]  # two steps an epoch show it
        trunk = [p.detach().clone() for p in run.trunk_params]
        head, proxies = run.model.head.weight.detach().clone(), run.loss_fn.proxies.detach().clone()
        train_epoch(run, 1)
        assert all(torch.equal(a, b) for a, b in zip(trunk, run.trunk_params))
        assert not torch.equal(head, run.model.head.weight) and not torch.equal(proxies, run.loss_fn.proxies)
        seen = []
        run.opt.step = (lambda step: lambda *a, **k: (seen.append(max(p.grad.abs().max().item() for g in
                        run.opt.param_groups for p in g["params"] if p.grad is not None)), step(*a, **k))[1])(run.opt.step)
        train_epoch(run, 2)
    assert any(not torch.equal(a, b) for a, b in zip(trunk, run.trunk_params))  # epoch 2: the trunk trains
    assert seen and max(seen) == pytest.approx(1e-3)  # every gradient element clipped to [-1e-3, 1e-3]


@pytest.mark.parametrize("schedule, warmup, expected", [
    ("step", 0.0, [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]),  # x0.5 every 2 epochs of 3 steps
    ("constant", 1.0, [1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    ("cosine", 1.0, [1 / 3, 2 / 3, 1] + [0.5 * (1 + math.cos(math.pi * k / 12)) for k in range(10)]),
])
def test_step_constant_and_cosine_schedules(schedule, warmup, expected):
    from pmlbal.optim import make_schedule

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_schedule(opt, schedule, epochs=5, steps_per_epoch=3, warmup_epochs=warmup, lr_step_epochs=2,
                          lr_gamma=0.5)
    lrs = []
    for _ in expected:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(expected)


def test_cv_folds_are_class_disjoint_and_cover_the_classes():
    from pmlbal.build import fold_mask

    labels = np.repeat(np.array([3, 5, 7, 8, 11, 12, 20]), 3)
    held = [set(labels[~fold_mask(labels, 3, f)]) for f in range(3)]
    assert set().union(*held) == set(labels.tolist()) and sum(len(h) for h in held) == 7
    for f, h in enumerate(held):
        assert not h & set(labels[fold_mask(labels, 3, f)])


def test_loss_data_args_fill_only_what_the_loss_takes():
    from pmlbal.build import loss_data_args

    assert loss_data_args("ProxyAnchorLoss", {"margin": 0.2}, 7, 64) == {"num_classes": 7, "embedding_size": 64,
                                                                          "margin": 0.2}
    assert loss_data_args("ProxyAnchorLoss", {"num_classes": 9}, 7, 64) == {"num_classes": 9, "embedding_size": 64}
    assert loss_data_args("NTXentLoss", {"temperature": 0.1}, 7, 64) == {"temperature": 0.1}


def test_recipe_values_are_checked():
    for kw, word in [({"optimizer": "sgd"}, "optimizer"), ({"schedule": "poly"}, "schedule"), ({"loss_lr": 0.0}, "loss_lr"),
                     ({"cv_folds": 1}, "cv_folds"), ({"crop_scale": 1.5}, "crop_scale"), ({"lr_gamma": 0.0}, "lr_gamma"),
                     ({"cache_mode": "letterbox"}, "cache_mode"), ({"eval_on": "neck"}, "eval_on")]:
        with pytest.raises(ValueError, match=word):
            TrainConfig(**kw).resolved()


def test_new_defaults_keep_the_identity_of_earlier_records():
    cfg = TrainConfig().resolved()
    assert set(identity(cfg)) == {"dataset", "loss", "loss_kwargs", "seed"} | {
        k for k in ("backbone", "embedding_dim", "epochs", "batch_size", "samples_per_class", "lr", "cache_size",
                    "input_size", "crop_scale")}


def test_random_batches_are_seeded_shuffles_without_repeats():
    from pmlbal.samplers.batches import RandomBatches

    labels = np.repeat(np.arange(5), 9)
    a, b = RandomBatches(labels, 10, 2, seed=1), RandomBatches(labels, 10, 2, seed=1)
    e1 = a.epoch(1, None)
    assert [x.tolist() for x in e1] == [x.tolist() for x in b.epoch(1, None)] and len(e1) == 4
    flat = np.concatenate(e1)
    assert len(set(flat.tolist())) == 40 and not np.array_equal(flat, np.concatenate(a.epoch(2, None)))


def test_fields_added_since_a_committed_record_stay_out_of_its_identity():
    import json
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("results/runs/*.json")):
        config = json.loads(path.read_text())["config"]
        assert set(identity(TrainConfig(**config))) <= set(config), path.name


def test_every_committed_record_carries_the_key_todays_code_gives_its_config():
    # bench and find_existing look a run up by its `config_key`: a record under another key
    # is invisible to them, and `bench` would train it again beside the old one.
    import json
    from pathlib import Path

    from pmlbal.records import run_key

    for path in sorted(Path(__file__).parents[1].glob("results/runs/*.json")):
        record = json.loads(path.read_text())
        key = run_key(TrainConfig(**record["config"]))
        assert record["config_key"] == key, path.name
        assert f"-{key}-s{record['seed']}-" in path.name, path.name  # found by name (`pmlbal records migrate`)


def test_eval_on_backbone_embeds_the_pooled_features_before_the_head():
    from pmlbal.data.gpu_batches import ImageBank, center_crop_resize, normalize
    from pmlbal.models import EmbeddingModel
    from pmlbal.evaluation import embed

    model = EmbeddingModel("resnet10t", 8, pooling="avg+max").eval()
    bank = ImageBank(np.random.default_rng(0).integers(0, 255, (5, 36, 36, 3), dtype=np.uint8), "cpu")
    x = normalize(center_crop_resize(bank.data, 32), model.mean, model.std)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.features(x), dim=1)
        head = torch.nn.functional.normalize(model(x), dim=1)
    got = embed(model, bank, 32, torch.device("cpu"), on="backbone")
    assert got.shape == (5, model.backbone.num_features)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(embed(model, bank, 32, torch.device("cpu")), head)


def test_bookkeeping_fields_are_not_part_of_a_runs_identity():
    from pmlbal.config import BOOKKEEPING, FIELD_ROLES
    from pmlbal.records import run_key

    base = TrainConfig().resolved()
    for changed in (dict(device="cpu"), dict(compile=True), dict(save_model=True), dict(progress=False),
                    dict(results_dir="elsewhere"), dict(cache_dir="/tmp/c")):
        cfg = TrainConfig(**changed).resolved()
        assert run_key(cfg) == run_key(base), changed  # `--device cpu`: the same run
    assert set(BOOKKEEPING) == {"device", "compile", "save_model", "progress", "results_dir", "cache_dir"}
    assert set(FIELD_ROLES) == {f.name for f in fields(TrainConfig)}
    assert run_key(TrainConfig(seed=1).resolved()) == run_key(base)
    assert run_key(TrainConfig(lr=1e-3).resolved()) != run_key(base)


@pytest.mark.slow
def test_a_run_says_what_it_prepares_before_its_first_epoch_line(tmp_path):
    # Decoding the image cache and evaluating the untrained network take minutes on the large data
    # sets: a user must see a line about each before the first epoch line, not minutes of silence.
    import re

    from click.testing import CliRunner

    from pmlbal.cli import main

    args = ["train", "--dataset", "digits", "--backbone", "test_resnet", "--embedding-dim", "16", "--epochs", "1",
            "--batch-size", "40", "--samples-per-class", "10", "--results-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def first(pattern):
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    cache = first(r"^digits: preparing the image cache \(train and test at \d+ px")
    untrained = first(r"^digits: evaluating the untrained network on test$")
    epoch = first(r"^digits/BalancedNTXentLoss seed 0: epoch 1/1: loss")
    assert cache < untrained < epoch, lines
    # Another loss from the same seed starts from the same network: its untrained metrics are read
    # from the memo, and nothing claims an evaluation that does not happen.
    again = CliRunner().invoke(main, args + ["--loss", "KCLLoss"])
    assert again.exit_code == 0, again.output
    assert "preparing the image cache" in again.output and "evaluating the untrained" not in again.output
