"""The untrained evaluation is memoised by the network and evaluation it depends on."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from pmlbal import untrained
from pmlbal.build import build_run
from pmlbal.config import TrainConfig


def _run(tmp_path, **kw):
    cfg = TrainConfig(dataset="digits", backbone="test_resnet", epochs=1, batch_size=20, samples_per_class=10,
                      results_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), progress=False)
    with torch.random.fork_rng():
        return build_run(replace(cfg, **kw))


def test_same_network_is_evaluated_once_and_gives_the_fresh_value(tmp_path, monkeypatch):
    calls = []
    a = _run(tmp_path, loss="BalancedNTXentLoss", lr=1e-3)
    fresh = a.evaluate()
    evaluate = type(a).evaluate
    monkeypatch.setattr(type(a), "evaluate", lambda self, final=False: calls.append(self.cfg.loss) or evaluate(self, final))
    first = untrained.untrained_metrics(a)
    assert first == fresh and calls == ["BalancedNTXentLoss"]
    # Another loss, learning rate and batch: the same starting network and evaluation -> the memo.
    b = _run(tmp_path, loss="NTXentLoss", lr=1e-2, batch_size=40)
    assert untrained.untrained_key(b) == untrained.untrained_key(a)
    assert untrained.untrained_metrics(b) == fresh and calls == ["BalancedNTXentLoss"]


def test_anything_that_changes_the_numbers_changes_the_key(tmp_path):
    base = untrained.untrained_key(_run(tmp_path))
    assert untrained.untrained_key(_run(tmp_path, seed=1)) != base  # other weights
    assert untrained.untrained_key(_run(tmp_path, eval_split="val", train_split="train-sub")) != base  # other images
    assert untrained.untrained_key(_run(tmp_path, embedding_dim=16)) != base
    assert untrained.untrained_key(_run(tmp_path, pooling="avg+max")) != base  # same weights, other features
    assert untrained.untrained_key(_run(tmp_path, eval_on="backbone")) != base
    # recipe options that act on training only share the memo
    assert untrained.untrained_key(_run(tmp_path, optimizer="rmsprop", loss_lr=1.0, schedule="step",
                                        freeze_trunk_epochs=1, clip_grad_value=1.0, cache_mode="aspect")) == base
    run = _run(tmp_path)
    with torch.no_grad():
        next(run.model.parameters()).add_(1e-6)
    assert untrained.untrained_key(run) != base
    # The thread count decides a CPU reduction's last bits: a 1-thread memo is not the 2-thread evaluation
    # (found when a 1-thread run's memo was read by the 2-thread golden run: effective rank off at 1e-15).
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before != 1 else 2)
        assert untrained.untrained_key(_run(tmp_path)) != base
    finally:
        torch.set_num_threads(before)


def test_a_corrupt_memo_is_evaluated_again(tmp_path):
    run = _run(tmp_path)
    first = untrained.untrained_metrics(run)
    (memo,) = (tmp_path / "cache" / "untrained").glob("*.json")
    memo.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert untrained.untrained_metrics(run) == first


@pytest.mark.parametrize("content", ["[]", "{}", '{"recall@1": "high"}', "null", '{"map_at_r": 0.5}'])
def test_a_memo_of_the_wrong_shape_is_ignored_with_a_warning(tmp_path, content):
    run = _run(tmp_path)
    first = untrained.untrained_metrics(run)
    (memo,) = (tmp_path / "cache" / "untrained").glob("*.json")
    memo.write_text(content)
    with pytest.warns(UserWarning, match="does not hold metrics"):
        again = untrained.untrained_metrics(run)
    assert again == first and json.loads(memo.read_text()) == first  # evaluated and written anew


def test_a_loss_with_parameters_starts_from_the_same_network(tmp_path):
    """Proxy-Anchor's proxies are drawn without moving the generator the model is drawn from."""
    plain = _run(tmp_path, loss="NTXentLoss")
    proxies = _run(tmp_path, loss="ProxyAnchorLoss")
    assert len(list(proxies.loss_fn.parameters())) == 1
    assert untrained.untrained_key(plain) == untrained.untrained_key(proxies)
