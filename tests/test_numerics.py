"""Numerics versions: a record of code that computed differently is not reused and is marked on the board."""

import pytest

from pmlbal.board_rows import build_rows, threads
from pmlbal.leaderboard import render_csv, render_markdown
from pmlbal.records import NUMERICS_VERSION, config_key, find_existing, find_failed, new_run_id, write_record
from pmlbal.registry import dataset_spec


def record(seed=0, version=NUMERICS_VERSION, threads_=2, balance=1.0, value=0.5):
    cfg = {"dataset": "digits", "loss": "BalancedNTXentLoss", "loss_kwargs": {"balance": balance}, "seed": seed,
           "backbone": "resnet10t", "embedding_dim": 64, "batch_size": 50, "epochs": 1, "eval_split": "test"}
    key = config_key(cfg)
    metrics = {m: value for m in dataset_spec("digits").metrics}
    r = {"schema": 1, "run_id": new_run_id(cfg, key), "config": cfg, "config_key": key, "seed": seed,
         "command": "pmlbal train --dataset digits", "final": metrics, "initial": {m: 0.1 for m in metrics},
         "device": f"CPU (x86_64, {threads_} threads)", "created": f"2026-12-0{seed + 1}"}
    if version is not None:
        r["numerics"] = {"version": version, "threads": threads_, "device": "cpu"}
    return r


def test_a_record_of_another_numerics_version_is_not_reused(tmp_path):
    old, older = record(version=NUMERICS_VERSION - 1), record(seed=1, version=None)
    write_record(old, tmp_path)
    write_record(older, tmp_path)
    assert find_existing(tmp_path, old["config_key"], 0) is None
    assert find_existing(tmp_path, old["config_key"], 1) is None  # no version: written before versions
    write_record({**old, "status": "diverged", "error": "nan"}, tmp_path, folder="failed")
    assert find_failed(tmp_path, old["config_key"], 0) is None
    current = record()
    write_record(current, tmp_path)
    assert find_existing(tmp_path, current["config_key"], 0)["run_id"] == current["run_id"]


def test_threads_come_from_numerics_or_from_an_old_device_line():
    assert threads(record(threads_=3)) == 3
    assert threads(record(version=None, threads_=2)) == 2
    assert threads({"device": "NVIDIA H200", "numerics": {"version": 1, "threads": 16, "device": "cuda"}}) is None
    assert threads({"device": "?"}) is None


def test_the_board_marks_stale_rows_and_prefers_current_runs():
    stale_row = [record(seed=s, version=None, balance=2.0, value=0.9) for s in range(3)]
    mixed = [record(seed=0, version=None, value=0.7), record(seed=1, value=0.4), record(seed=2, value=0.6)]
    rows = build_rows(stale_row + mixed, "digits")
    trained = {r["loss"]: r for r in rows if not r["untrained"]}
    assert trained["BalancedNTXentLoss(balance=2.0)"]["stale"] is True
    fresh = trained["BalancedNTXentLoss(balance=1.0)"]
    # The current runs alone: the stale seed 0 is left out, not averaged in.
    assert fresh["stale"] is False and fresh["seeds"] == 2 and abs(fresh["map_at_r"][0] - 0.5) < 1e-12
    md = render_markdown(rows, "digits", 3)
    assert "BalancedNTXentLoss(balance=2.0) ‡" in md and "BalancedNTXentLoss(balance=1.0) ‡" not in md
    assert f"earlier numerics version than the current code's ({NUMERICS_VERSION}" in md
    assert "Every CPU run used 2 threads" in md and "| threads |" not in md
    assert render_csv(rows, "digits").splitlines()[0].endswith(",threads,cpus,stale,collapsed")


def test_a_board_mixing_thread_counts_shows_them_per_row():
    rows = build_rows([record(threads_=1), record(seed=1, balance=3.0, threads_=2)], "digits")
    md = render_markdown(rows, "digits", 1)
    assert "| seeds | threads |" in md and "*threads* column" in md
    assert "‡" not in md


def test_the_board_names_the_cpus_its_rows_come_from_and_marks_them_per_row_when_they_differ():
    from pmlbal.cpu import fingerprint

    here = fingerprint(threads=2)
    other = {**here, "model": "Intel(R) Xeon(R) Platinum", "isa": here["isa"] + ["avx512f", "amx_tile"]}
    other["id"] = "0123456789"
    runs = [record(seed=0), record(seed=1), record(seed=0, balance=3.0), record(seed=0, balance=4.0)]
    for r, fp in zip(runs, (here, other, here)):
        r["numerics"]["cpu"] = fp
    md = render_markdown(build_rows(runs, "digits"), "digits", 1)
    assert "| seeds | cpu |" in md and f"[a] {here['model']} (family" in md and "[b] Intel(R) Xeon(R)" in md
    assert "[?] not recorded" in md
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ") and "balance=" in line}
    assert " | 2 | a, b | " in lines["BalancedNTXentLoss(balance=1.0)"]
    assert " | 1 | ? | " in lines["BalancedNTXentLoss(balance=4.0)"]
    one = render_markdown(build_rows(runs[2:3], "digits"), "digits", 1)
    assert "| cpu |" not in one and f"CPU: {here['model']} (family {here['family']}" in one


def test_stale_runs_are_the_configurations_and_seeds_without_a_current_record(tmp_path):
    from pmlbal.remake import stale_runs

    write_record(record(seed=0, version=None), tmp_path)
    write_record(record(seed=1, version=None), tmp_path)
    write_record(record(seed=1), tmp_path)  # seed 1 re-made already
    val = record(seed=2, version=None)
    val["config"] = {**val["config"], "eval_split": "val"}
    write_record(val, tmp_path)
    assert [(r["seed"], r["config"]["eval_split"]) for r in stale_runs(tmp_path)] == [(0, "test")]
    assert sorted(r["seed"] for r in stale_runs(tmp_path, split=None)) == [0, 2]
    assert stale_runs(tmp_path, dataset="fashion-mnist") == []


@pytest.mark.slow
def test_remake_replaces_a_stale_record_with_the_current_codes_run(tmp_path):
    import json

    from pmlbal.config import TrainConfig
    from pmlbal.remake import remake
    from pmlbal.train import train

    first = train(TrainConfig(dataset="digits", epochs=1, results_dir=str(tmp_path), progress=False))
    path = next((tmp_path / "runs").glob("*.json"))
    old = json.loads(path.read_text())
    del old["numerics"]  # as written before numerics versions
    old["final"] = {**old["final"], "map_at_r": 0.0}
    path.write_text(json.dumps(old))
    lines = []
    done, left = remake(tmp_path, log=lines.append)
    assert left == [] and len(done) == 1 and done[0]["final"] == first["final"]
    assert [p.name for p in (tmp_path / "runs").glob("*.json")] == [f"{done[0]['run_id']}.json"]
    assert "numerics 0: 0.0000" in lines[-1]
    assert remake(tmp_path, log=lines.append) == ([], [])  # nothing stale left
