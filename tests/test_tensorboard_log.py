"""TensorBoard logging of a run (`pmlbal train --tensorboard DIR`), read back from the event files."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from click.testing import CliRunner

from pmlbal.cli import main

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard not installed (pip install 'pmlbal[tensorboard]')")
def test_event_files_hold_both_terms_per_step_the_metrics_and_the_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    args = ["train", "--backbone", "test_resnet", "--embedding-dim", "16", "--epochs", "2", "--eval-every", "1",
            "--batch-size", "40", "--samples-per-class", "10", "--loss", "BalancedNTXentLoss(balance=2.0)",
            "--tensorboard", str(tmp_path / "tb"), "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    (run_dir,) = (tmp_path / "tb").iterdir()
    assert run_dir.name.startswith("digits-BalancedNTXentLoss-") and run_dir.name.endswith("-s0")

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    steps = record["steps"]
    for term in ("loss", "pos_term", "entropy_term"):  # the record's per-step values, step by step
        logged = scalars[f"train/{term}"]
        assert [e.step for e in logged] == list(range(1, len(steps) + 1))
        assert [e.value for e in logged] == pytest.approx([s[term] for s in steps], rel=1e-6)
    # Every evaluation: the untrained model at step 0, epoch 1 (--eval-every 1) and the end.
    per_epoch = len(steps) // 2
    recall = scalars["eval/recall@1"]
    assert [e.step for e in recall] == [0, per_epoch, 2 * per_epoch]
    assert [e.value for e in recall] == pytest.approx([record["initial"]["recall@1"],
                                                       record["epochs"][0]["metrics"]["recall@1"],
                                                       record["final"]["recall@1"]], rel=1e-6)
    assert scalars["hparam/map_at_r"][0].value == pytest.approx(record["final"]["map_at_r"], rel=1e-6)

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss"].string_value == "BalancedNTXentLoss"
    assert hparams["loss_kwargs.balance"].number_value == 2.0
    assert hparams["epochs"].number_value == 2 and hparams["pretrained"].string_value == "None"


def test_missing_tensorboard_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    result = CliRunner().invoke(main, ["train", "--tensorboard", str(tmp_path / "tb"), "--results-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "pip install 'pmlbal[tensorboard]'" in result.output
    assert not (tmp_path / "runs").exists()  # refused before any training
