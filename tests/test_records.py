"""The record store: files named by the key they hold, found by name, one run per configuration and seed."""

import json

from pmlbal.records import (NUMERICS_VERSION, SCHEMA_VERSION, config_key, find_existing, find_failed, migrate, new_run_id, record_name,
                            replace_record, write_record)


def record(seed=0, balance=1.0, key=None):
    cfg = {"dataset": "digits", "loss": "BalancedNTXentLoss", "loss_kwargs": {"balance": balance}, "seed": seed}
    key = key or config_key(cfg)
    return {"schema": SCHEMA_VERSION, "run_id": new_run_id(cfg, key), "config": cfg, "config_key": key, "seed": seed,
            "command": "pmlbal train", "final": {"recall@1": 0.5 + seed},
            "numerics": {"version": NUMERICS_VERSION, "threads": 1, "device": "cpu"}}


def test_a_record_file_is_named_by_the_key_and_seed_it_holds(tmp_path):
    r = record(seed=3)
    path = write_record(r, tmp_path)
    assert path.name == f"{r['run_id']}.json" == record_name(r)
    assert f"-{r['config_key']}-s3-" in path.name and path.name.startswith("digits-BalancedNTXentLoss-")


def test_two_seeds_of_one_configuration_are_kept_apart(tmp_path):
    a, b = record(seed=0), record(seed=1)
    assert a["config_key"] == b["config_key"]
    replace_record(a, tmp_path)
    _, replaced = replace_record(b, tmp_path)
    assert replaced == []  # seed 1 does not replace seed 0
    assert find_existing(tmp_path, a["config_key"], 0)["final"] == a["final"]
    assert find_existing(tmp_path, a["config_key"], 1)["final"] == b["final"]
    assert find_existing(tmp_path, a["config_key"], 2) is None
    again = record(seed=1)
    _, replaced = replace_record(again, tmp_path)
    assert [p.name for p in replaced] == [record_name(b)]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2


def test_a_look_up_checks_what_the_name_says(tmp_path):
    # A file whose name claims a key its content does not hold is not returned (a hand-renamed file).
    r = record()
    other = record(balance=2.0)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / record_name(r)).write_text(json.dumps(other))
    assert find_existing(tmp_path, r["config_key"], 0) is None


def test_failed_runs_are_found_by_name_too(tmp_path):
    r = {**record(), "status": "diverged", "error": "training diverged"}
    write_record(r, tmp_path, folder="failed")
    assert find_failed(tmp_path, r["config_key"], 0)["error"] == "training diverged"
    assert find_failed(tmp_path, r["config_key"], 1) is None


def test_migrate_renames_records_named_by_another_key_once(tmp_path):
    r = record()
    old = tmp_path / "runs" / "digits-BalancedNTXentLoss-0123456789ab-s0-deadbeef.json"
    old.parent.mkdir()
    text = json.dumps({**r, "run_id": old.stem}, indent=1, sort_keys=True)
    old.write_text(text)
    (tmp_path / "runs" / "junk.json").write_text("{not json")
    assert find_existing(tmp_path, r["config_key"], 0) is None  # invisible under its old name
    moved = migrate(tmp_path)
    new = tmp_path / "runs" / f"digits-BalancedNTXentLoss-{r['config_key']}-s0-deadbeef.json"
    assert moved == [(old, new)] and new.read_text() == text  # renamed, not rewritten
    assert find_existing(tmp_path, r["config_key"], 0)["run_id"] == old.stem
    assert migrate(tmp_path) == []


def test_records_migrate_command(tmp_path):
    from click.testing import CliRunner

    from pmlbal.cli import main

    r = record()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "digits-BalancedNTXentLoss-0123456789ab-s0-deadbeef.json").write_text(json.dumps(r))
    out = CliRunner().invoke(main, ["records", "migrate", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0 and "1 record(s) renamed" in out.output
    assert find_existing(tmp_path, r["config_key"], 0) is not None


def test_a_lock_that_cannot_be_released_leaves_the_runs_own_error_in_front(tmp_path, monkeypatch):
    """Fault trial, second round (issue 46, case 28): a results folder that turned read-only during a run
    made the lock's removal raise EROFS, which replaced the checkpoint error that says what was kept."""
    import errno
    from pathlib import Path

    import pytest

    from pmlbal.records import run_lock

    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):
        if self.name.endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    with pytest.raises(ValueError, match="the run's own error"), pytest.warns(RuntimeWarning, match="next run takes it"):
        with run_lock(tmp_path, "k", 0):
            monkeypatch.setattr(Path, "unlink", read_only)
            raise ValueError("the run's own error")


def test_a_damaged_file_named_as_the_runs_record_is_named_when_the_run_is_trained_again(tmp_path):
    """Fault trial, second round (issue 46, case 42): bench retrained beside a truncated record without a word."""
    import pytest

    key = config_key({"dataset": "digits", "loss": "BalancedNTXentLoss", "loss_kwargs": {}, "seed": 0})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"digits-BalancedNTXentLoss-{key}-s0-abcdef12.json").write_text('{"schema": 1, "run_id": "tru')
    with pytest.warns(RuntimeWarning, match="is named as this run's record but is unreadable"):
        assert find_existing(tmp_path, key, 0) is None
