import json
import math

import optuna
import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.train import TrainConfig
from pmlbal.tune import Dim, grid_values, make_spec, open_storage, run_search, search_space
from pmlbal.tune.spaces import suggest


def analytic(dims):
    def objective(trial):
        v = {d.name: suggest(trial, d) for d in dims}
        return -(math.log2(v["balance"]) - 1) ** 2 - (math.log2(v["temperature"]) + 3) ** 2
    return objective


@pytest.mark.parametrize("search", ["cd", "tpe", "random", "grid"])
def test_run_search_resumes_in_sqlite(tmp_path, search):
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    url = f"sqlite:///{tmp_path}/t.db"
    run_search(analytic(dims), dims, search, budget=6, storage=url, study_name="s")
    study = run_search(analytic(dims), dims, search, budget=14, storage=url, study_name="s")
    assert len(study.trials) <= 14 and len(study.trials) >= 6
    if search in ("cd", "grid"):
        keys = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(keys)) == len(keys)


def test_cd_reaches_grid_optimum_with_fewer_trials(tmp_path):
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    grid = run_search(analytic(dims), dims, "grid", budget=9 * 7, storage=None, study_name="g")
    cd = run_search(analytic(dims), dims, "cd", budget=63, storage=None, study_name="c")
    assert cd.best_value >= grid.best_value - 1e-9 and len(cd.trials) <= 0.5 * len(grid.trials)


def test_search_space_and_grid():
    dims = search_space("BalancedContrastiveLoss", "cub", overrides={"balance": (0.25, 4.0)})
    assert [d.name for d in dims] == ["balance", "pos_margin", "neg_margin", "batch_size", "lr"]
    assert grid_values(dims[0]) == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert grid_values(dims[3]) == [32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="no default search space"):
        search_space("TripletMarginLoss")
    with pytest.raises(ValueError, match="cannot override"):
        search_space("KCLLoss", overrides={"temperature": (0.1, 1)})


@pytest.mark.slow
def test_cli_tune_with_two_workers_then_show_retrain_and_bench_tuned(tmp_path):
    """The whole tuning path on digits: two worker processes on a journal file, the trajectory
    and its plot, the best configuration retrained on test, and `bench --config tuned` finding it."""
    url = f"journal:{tmp_path}/tuning.log"
    common = ["--dataset", "digits", "--epochs", "1", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["tune", "--loss", "BalancedNTXentLoss", "--budget", "3", "--storage", url,
                                       "--study", "t", "--workers", "2", "--space", "balance=0.5:2"] + common)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    trials = study.trials
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" and t.user_attrs.get("run_id") for t in trials)
    assert len({t.system_attrs["pmlbal:worker"] for t in trials}) >= 1
    assert all(0.5 <= t.params["balance"] <= 2 for t in trials)
    final = [r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))
             if r["config"]["eval_split"] == "test"]
    assert len(final) == 1 and final[0]["config"]["tuned_from"] == f"{url}#t"
    assert final[0]["config"]["loss_kwargs"]["balance"] == study.best_params["balance"]
    assert "best configuration on test" in result.output

    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "t", "--results-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "best so far" in shown.output and len(shown.output.splitlines()) >= 5
    assert (tmp_path / "tuning-t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bench = CliRunner().invoke(main, ["bench", "--losses", "BalancedNTXentLoss", "--config", "tuned", "--storage", url]
                               + common)
    assert bench.exit_code == 0, bench.output
    assert "tuned configuration from study 't'" in bench.output and "recorded already" in bench.output
    assert "BalancedNTXentLoss(balance=" in bench.output and "[tuned]" in bench.output


def test_cli_tune_refuses_bad_options(tmp_path):
    url = f"sqlite:///{tmp_path}/tuning.db"
    for args, word in [(["--loss", "TripletMarginLoss"], "no default search space"),
                       (["--space", "balance=abc"], "NAME=LOW:HIGH"),
                       (["--space", "tau=1:2"], "cannot override"),
                       (["--storage", "results/tuning.db"], "not a URL"),
                       (["--workers", "2", "--storage", "sqlite:///:memory:"], "needs a storage")]:
        bad = CliRunner().invoke(main, ["tune", "--storage", url] + args if "--storage" not in args else ["tune"] + args)
        assert bad.exit_code != 0 and word in bad.output, (args, bad.output)
        assert [line for line in bad.output.splitlines() if line.startswith("Error:")] and "Traceback" not in bad.output


def test_a_study_cannot_be_resumed_with_another_search(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    base = TrainConfig()
    run_search(analytic(dims), dims, "cd", 3, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "cd", 3))
    with pytest.raises(ValueError, match="another search"):
        run_search(analytic(dims), dims, "tpe", 3, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "tpe", 3))
    more = run_search(analytic(dims), dims, "cd", 6, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "cd", 6))
    assert len(more.trials) == 6  # a larger budget resumes the same search


def test_bench_tuned_falls_back_to_defaults_without_a_study(tmp_path):
    from pmlbal.bench import tuned_config

    notes = []
    cfg = tuned_config(TrainConfig(), "BalancedNTXentLoss", {}, f"sqlite:///{tmp_path}/none.db", notes.append)
    assert cfg.loss_kwargs == {} and cfg.tuned_from is None and "default configuration" in notes[0]
    assert not (tmp_path / "none.db").exists()  # looking did not create a database


def test_worker_and_show_name_a_missing_study(tmp_path):
    url = f"journal:{tmp_path}/j.log"
    worker = CliRunner().invoke(main, ["tune-worker", "--storage", url, "--study", "nope"])
    assert worker.exit_code != 0 and "no study 'nope'" in worker.output and "Traceback" not in worker.output
    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "nope"])
    assert shown.exit_code != 0 and "no study 'nope'" in shown.output
    foreign = optuna.create_study(study_name="plain", storage=open_storage(url))
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    plain = CliRunner().invoke(main, ["tune-worker", "--storage", url, "--study", "plain"])
    assert plain.exit_code != 0 and "not made by `pmlbal tune`" in plain.output
