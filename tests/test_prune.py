"""`pmlbal records prune`: a retired or deleted study's tuned rows leave the boards, their records kept."""

import json

import optuna
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.records import NUMERICS_VERSION, SCHEMA_VERSION, config_key, new_run_id, write_record


def _record(tuned_from=None, split="test", seed=0):
    cfg = {"dataset": "digits", "loss": "BalancedNTXentLoss", "backbone": "resnet10t", "embedding_dim": 64,
           "batch_size": 50, "epochs": 8, "eval_split": split, "loss_kwargs": {"balance": float(seed + 2)},
           "seed": seed}
    if tuned_from:
        cfg["tuned_from"] = tuned_from
    return {"schema": SCHEMA_VERSION, "run_id": new_run_id(cfg), "config": cfg, "config_key": config_key(cfg),
            "seed": seed, "command": "pmlbal train", "final": {"recall@1": 0.5, "map_at_r": 0.2},
            "device": "CPU", "numerics": {"version": NUMERICS_VERSION, "threads": 1, "device": "cpu"}}


def test_prune_moves_only_the_retired_and_the_deleted_studies_rows(tmp_path):
    url = f"sqlite:///{tmp_path}/tuning.db"
    for name in ("kept", "retired"):
        optuna.create_study(storage=url, study_name=name)
    paths = {what: write_record(_record(tuned_from=src, seed=i), tmp_path) for i, (what, src) in enumerate([
        ("kept", f"{url}#kept"), ("retired", f"{url}#retired"), ("deleted", f"{url}#gone"),
        ("elsewhere", "sqlite:///other.db#gone"), ("plain", None)])}
    trial = write_record(_record(tuned_from=f"{url}#gone", split="val", seed=9), tmp_path)
    run = lambda *a: CliRunner().invoke(main, ["records", "prune", "--results-dir", str(tmp_path), "--storage", url, *a])  # noqa: E731

    dry = run("--dry-run")
    assert dry.exit_code == 0 and "1 record(s) would move" in dry.output and all(p.exists() for p in paths.values())
    out = run()
    assert out.exit_code == 0 and "1 record(s) moved" in out.output
    assert not paths["deleted"].exists() and (tmp_path / "pruned" / "gone" / paths["deleted"].name).is_file()
    out = run("--study", "retired")
    assert out.exit_code == 0 and not paths["retired"].exists()
    moved = tmp_path / "pruned" / "retired" / paths["retired"].name
    assert json.loads(moved.read_text())["config"]["tuned_from"].endswith("#retired")  # kept whole
    assert all(paths[k].exists() for k in ("kept", "elsewhere", "plain")) and trial.exists()
    bad = run("--study", "nope")
    assert bad.exit_code == 1 and "no study 'nope'" in bad.output and "it holds: kept, retired" in bad.output


def test_prune_stale_moves_only_the_stale_test_records_of_the_named_configurations(tmp_path):
    stale, current, trial = _record(seed=0), _record(seed=1), _record(seed=0, split="val")
    for r in (stale, trial):
        r["numerics"]["version"] = NUMERICS_VERSION - 1
    paths = [write_record(r, tmp_path) for r in (stale, current, trial)]
    run = lambda *a: CliRunner().invoke(main, ["records", "prune", "--results-dir", str(tmp_path), *a])  # noqa: E731

    out = run("--stale", stale["config_key"], "--stale", "feedfacecafe")
    assert out.exit_code == 1 and "no stale test record of configuration 'feedfacecafe'" in out.output
    assert all(p.exists() for p in paths)  # a typo retires nothing
    out = run("--stale", current["config_key"], "--study", "x")
    assert out.exit_code == 1 and "give one or the other" in out.output
    out = run("--stale", stale["config_key"])
    assert out.exit_code == 0 and "1 record(s) moved" in out.output
    assert not paths[0].exists() and (tmp_path / "pruned" / "stale" / paths[0].name).is_file()
    assert paths[1].exists() and paths[2].exists()  # a current record, a validation trial: kept
