"""`pmlbal records remake`: re-trains the stale runs of a results folder (records of an earlier numerics
version) through `pmlbal.remake`, prints its lines and a summary, exits 1 when some are left. The trainer
is a stand-in: which runs are re-made, and what the command reports, is under test."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pmlbal.remake
from pmlbal.cli import main
from pmlbal.loop import DivergedError
from pmlbal.records import NUMERICS_VERSION

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"


@pytest.fixture
def results(tmp_path):
    """A results folder with two committed digits records: one made stale (its `numerics` stripped),
    one stamped with the current numerics version."""
    small = sorted((p for p in RUNS.glob("digits-*-s0-*.json")
                    if json.loads(p.read_text())["config"].get("eval_split", "test") == "test"),
                   key=lambda p: (p.stat().st_size, p.name))
    stale, current = small[0], next(p for p in small if p.name.split("-s0-")[0] != small[0].name.split("-s0-")[0])
    (tmp_path / "runs").mkdir()
    for src, numerics in ((stale, None), (current, {"version": NUMERICS_VERSION})):
        record = json.loads(src.read_text())
        record.pop("numerics", None)
        if numerics:
            record["numerics"] = numerics
        (tmp_path / "runs" / src.name).write_text(json.dumps(record))
    return tmp_path, json.loads(stale.read_text())


def test_remake_retrains_only_the_stale_run_and_sums_up(results, monkeypatch):
    folder, stale = results
    trained = []

    def fake_train(cfg, reuse=False, resume=False, log=None):
        trained.append(cfg)
        return {"final": {"map_at_r": 0.5}}

    monkeypatch.setattr(pmlbal.remake, "train", fake_train)
    result = CliRunner().invoke(main, ["records", "remake", "--results-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert [(c.loss, c.loss_kwargs, c.seed) for c in trained] == [
        (stale["config"]["loss"], stale["config"]["loss_kwargs"], stale["seed"])]
    assert trained[0].results_dir == str(folder)
    lines = result.output.splitlines()
    assert lines[0].startswith("[1/1] digits ") and "MAP@R 0.5000 (numerics 0: " in lines[0]
    assert lines[-1] == "1 stale run(s): 1 re-made, 0 left"
    other = CliRunner().invoke(main, ["records", "remake", "--dataset", "cub", "--split", "all",
                                      "--results-dir", str(folder)])
    assert other.exit_code == 0 and other.output == "0 stale run(s): 0 re-made, 0 left\n" and len(trained) == 1


def test_remake_exits_non_zero_when_a_stale_run_is_left(results, monkeypatch):
    folder, _ = results

    def diverges(cfg, **kw):
        raise DivergedError("training diverged: loss nan at epoch 1, step 3", 1, 3)

    monkeypatch.setattr(pmlbal.remake, "train", diverges)
    result = CliRunner().invoke(main, ["records", "remake", "--split", "all", "--results-dir", str(folder)])
    assert result.exit_code == 1
    assert "training diverged" in result.output
    assert result.output.splitlines()[-1] == "1 stale run(s): 0 re-made, 1 left (diverged, or trained by another process)"


def test_remake_refuses_a_folder_it_cannot_write(tmp_path):
    (tmp_path / "runs").write_text("a file where the records folder should be")
    result = CliRunner().invoke(main, ["records", "remake", "--results-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
