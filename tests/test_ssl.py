"""Self-supervised training (``--task ssl``, issue 48): two views, no labels in training, kNN and linear
probes in evaluation, the classification protocol's splits."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pytorch_metric_learning.losses import NTXentLoss, SelfSupervisedLoss

from pmlbal.build import build_run, two_view_loss
from pmlbal.config import TrainConfig
from pmlbal.data import create
from pmlbal.data.views import RECIPES, make_views
from pmlbal.losses import BalancedNTXentLoss
from pmlbal.loop import train_epoch
from pmlbal.metrics.probes import knn_top1, linear_top1

SSL = TrainConfig(dataset="digits", task="ssl", epochs=1, batch_size=250, progress=False)


def test_ssl_resolves_to_the_classification_protocol_with_random_single_image_batches():
    cfg = SSL.resolved()
    assert (cfg.train_split, cfg.eval_split, cfg.sampler, cfg.samples_per_class) == ("cls-train", "cls-test", "random", 1)
    assert (cfg.eval_on, cfg.views) == ("backbone", "crop-jitter")  # digits: a mirrored digit is another thing
    assert TrainConfig(dataset="cjk-glyphs", task="ssl").resolved().views == "glyph"
    assert TrainConfig(dataset="digits").resolved().eval_on == "head" and TrainConfig().resolved().views is None


@pytest.mark.parametrize("change, message", [
    ({"sampler": "spectral"}, "--task ssl draws random batches"),
    ({"val_folds": 3, "eval_split": "val", "train_split": "train-sub"}, "trains on cls-train"),
    ({"views": "sideways"}, "views must be one of"),
    ({"task": "supervised"}, "task must be one of metric, ssl"),
])
def test_bad_ssl_settings_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        replace(SSL, **change).resolved()
    with pytest.raises(ValueError, match="views are for --task ssl"):
        TrainConfig(views="glyph").resolved()


def test_the_classification_splits_divide_every_class_between_train_and_test():
    train, test = create("digits", None, "cls-train"), create("digits", None, "cls-test")
    assert set(train.labels) == set(test.labels) == set(range(10))
    assert not set(train.paths) & set(test.paths) and len(train) + len(test) == 1797
    assert 5 <= len(train) / len(test) <= 6  # every 6th image of a class is a test image


@pytest.mark.parametrize("recipe", RECIPES)
def test_views_are_random_per_image_reproducible_under_the_global_seed_and_in_range(recipe):
    images = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    view = make_views(recipe, 28)
    torch.manual_seed(3)
    a, b = view(images), view(images)
    torch.manual_seed(3)
    again = view(images)
    assert a.shape == (6, 3, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, again) and not torch.equal(a, b)  # the run's seed fixes them; two draws differ
    assert not torch.equal(a[0], make_views(recipe, 28)(images[:1].repeat(6, 1, 1, 1))[1])


def test_the_two_view_loss_is_pmls_self_supervised_form_and_balance_1_is_ntxent():
    torch.manual_seed(0)
    first, second = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8)
    ours = two_view_loss(BalancedNTXentLoss(balance=1.0, temperature=0.07), "BalancedNTXentLoss")(
        torch.cat([first, second]), None)
    pml = SelfSupervisedLoss(NTXentLoss(temperature=0.07), symmetric=True)(first, second)
    assert torch.allclose(ours, pml, atol=1e-6)
    ours.backward()
    assert first.grad is not None and torch.isfinite(first.grad).all()
    with pytest.raises(ValueError, match="has no two-view form"):
        two_view_loss(torch.nn.MSELoss(), "MSELoss")


def test_knn_top1_is_the_weighted_vote_of_a_naive_loop():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(60, 5)), rng.normal(size=(17, 5))
    bank_y, query_y = rng.integers(0, 4, 60), rng.integers(0, 4, 17)
    k, t = 7, 0.1
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    correct = 0
    for q, y in zip(queries / np.linalg.norm(queries, axis=1, keepdims=True), query_y):
        sims = b @ q
        nearest = np.argsort(-sims)[:k]
        votes = np.zeros(4)
        for j in nearest:
            votes[bank_y[j]] += np.exp(sims[j] / t)
        correct += int(votes.argmax() == y)
    got = knn_top1(torch.tensor(bank), bank_y, torch.tensor(queries), query_y, k=k, t=t, chunk=5)
    assert got == pytest.approx(correct / 17)
    assert knn_top1(torch.tensor(bank), bank_y, torch.tensor(bank), bank_y, k=1) == 1.0  # itself, first
    with pytest.raises(ValueError, match="needs a bank and queries"):
        knn_top1(torch.zeros(0, 5), [], torch.tensor(queries), query_y)


def test_the_linear_probe_fits_train_features_and_scores_test():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 6)) + 4 * np.eye(6)[y]
    assert linear_top1(torch.tensor(x[::2]), y[::2], torch.tensor(x[1::2]), y[1::2]) == 1.0
    shuffled = rng.permutation(y[1::2])
    assert linear_top1(torch.tensor(x[::2]), y[::2], torch.tensor(x[1::2]), shuffled) < 0.6


def _trained_state(monkeypatch, permute: bool) -> tuple[list[float], dict]:
    import pmlbal.data

    made = pmlbal.data.create

    def permuted(name, root, split):  # the split's images as they are, their labels shuffled
        dataset = made(name, root, split)
        if permute:
            dataset.labels = np.random.default_rng(5).permutation(dataset.labels)
        return dataset

    monkeypatch.setattr(pmlbal.data, "create", permuted)
    run = build_run(SSL)
    entry, steps, _, _ = train_epoch(run, 1)
    return [float(s["loss"]) for s in steps], {k: v.clone() for k, v in run.model.state_dict().items()}


def test_labels_never_reach_training_permuted_labels_train_bit_for_bit_the_same(monkeypatch):
    losses, state = _trained_state(monkeypatch, permute=False)
    again, permuted_state = _trained_state(monkeypatch, permute=True)
    assert losses == again and len(losses) == 6
    assert all(torch.equal(state[k], permuted_state[k]) for k in state)


@pytest.mark.slow
def test_cli_trains_ssl_end_to_end_with_knn_and_linear_probes_off_the_metric_boards(tmp_path):
    from pmlbal.cli import main

    args = ["train", "--dataset", "digits", "--task", "ssl", "--epochs", "2", "--batch-size", "250", "--eval-every",
            "1", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["config"]["task"] == "ssl" and "--task ssl" in record["command"]
    assert {"knn_top1", "linear_top1", "map_at_r", "effective_rank"} <= set(record["final"])
    assert {"knn_top1", "linear_top1"} <= set(record["initial"])  # the untrained network, same probes
    assert {"knn_top1", "linear_top1", "map_at_r"} <= set(record["pixels"])  # and the raw pixels
    assert "knn_top1" in record["epochs"][0]["metrics"] and "linear_top1" not in record["epochs"][0]["metrics"]
    assert 0.1 < record["final"]["knn_top1"] <= 1 and 0.1 < record["final"]["linear_top1"] <= 1
    from pmlbal.leaderboard import write_leaderboards

    assert write_leaderboards(tmp_path, plots=False, warn=lambda m: None) == {}  # not a metric-learning board's row


def test_the_reproducing_command_names_the_task_and_nothing_the_task_implies():
    from pmlbal.command import command_for

    cmd = command_for(SSL.resolved())
    assert cmd.endswith(" --task ssl") and cmd.startswith("pmlbal train --dataset digits --loss BalancedNTXentLoss ")
    assert not any(f in cmd for f in ("--eval-on", "--train-split", "--eval-split", "--sampler", "--samples-per-class",
                                      "--views"))  # what --task ssl implies
    # eval_on's default is None now (resolved by the task): a metric run's command stays as it always was.
    assert "--eval-on" not in command_for(TrainConfig(dataset="digits").resolved())
    assert "--eval-on backbone" in command_for(TrainConfig(dataset="digits", eval_on="backbone").resolved())
