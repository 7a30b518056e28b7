"""Ctrl-C during `train`, `bench` or `tune`: one line naming what is kept and the command that continues,
exit code 130 (128 + SIGINT), never click's bare "Aborted!" (issue 27). The trainer is a stand-in that
raises KeyboardInterrupt: the CLI's handling is under test, not training."""

import optuna
import pytest
from click.testing import CliRunner

import pmlbal.bench
import pmlbal.train
import pmlbal.tune.run
from pmlbal.cli import main
from pmlbal.resume import checkpoint_path


def _interrupted_line(result) -> str:
    assert result.exit_code == 130, result.output
    assert "Aborted" not in result.output and "Traceback" not in result.output
    lines = result.output.splitlines()  # after what the command printed before (notes, a bar)
    assert [line for line in lines if line.startswith("Interrupted: ")] == lines[-1:]
    return lines[-1]


@pytest.mark.parametrize("epoch_finished", [True, False])
def test_interrupted_train_names_its_checkpoint_and_the_resume_command(tmp_path, monkeypatch, epoch_finished):
    kept = []

    def interrupted_after_an_epoch(cfg, **kw):
        if epoch_finished:  # what the trainer leaves after epoch 1 of 3: the run state, named by the run
            path = checkpoint_path(cfg.resolved())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"state")
            kept.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(pmlbal.train, "train", interrupted_after_an_epoch)
    args = ["train", "--epochs", "3", "--loss", "NTXentLoss(temperature=0.1)", "--results-dir", str(tmp_path)]
    line = _interrupted_line(CliRunner().invoke(main, args))
    command = f"pmlbal train --epochs 3 --loss 'NTXentLoss(temperature=0.1)' --results-dir {tmp_path}"
    assert line.endswith(f"to continue, run: {command}")  # train continues by default, as bench does
    if epoch_finished:
        assert f"the checkpoint of the last finished epoch is kept: {kept[0]};" in line
    else:
        assert "no epoch had finished, so no checkpoint is kept" in line
    again = _interrupted_line(CliRunner().invoke(main, args + ["--fresh"]))  # the same command, less --fresh
    assert again.endswith(f"to continue, run: {command}")


def test_interrupted_bench_says_the_same_command_resumes(tmp_path, monkeypatch):
    def interrupted(cfg, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pmlbal.bench, "train", interrupted)
    args = ["bench", "--losses", "NTXentLoss,KCLLoss", "--epochs", "1", "--results-dir", str(tmp_path)]
    line = _interrupted_line(CliRunner().invoke(main, args))
    assert f"the checkpoint of its last finished epoch ({tmp_path / 'runs'}/*.ckpt)" in line
    assert line.endswith(f"to continue, run: pmlbal bench --losses NTXentLoss,KCLLoss --epochs 1 --results-dir {tmp_path}")


def test_interrupted_tune_keeps_the_study_and_fails_the_trial_for_a_retry(tmp_path, monkeypatch):
    def interrupted(cfg, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pmlbal.tune.run, "train", interrupted)
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    args = ["tune", "--budget", "2", "--val-folds", "1", "--storage", storage, "--results-dir", str(tmp_path)]
    line = _interrupted_line(CliRunner().invoke(main, args))
    assert "study digits-BalancedNTXentLoss-cd keeps its finished trials" in line
    assert line.endswith(f"to continue, run: pmlbal tune --budget 2 --val-folds 1 --storage {storage} --results-dir {tmp_path}")
    study = optuna.load_study(study_name="digits-BalancedNTXentLoss-cd", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
