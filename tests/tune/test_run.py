import math

import optuna
import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.tune import Dim, grid_values, run_search, search_space
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
def test_cli_tune_on_digits_records_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/tuning.db"
    args = ["tune", "--dataset", "digits", "--loss", "BalancedNTXentLoss", "--budget", "3", "--epochs", "1",
            "--storage", url, "--study", "t", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="t", storage=url)
    assert len(study.trials) == 3 and all(t.user_attrs.get("run_id") for t in study.trials)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3
    bad = CliRunner().invoke(main, ["tune", "--loss", "TripletMarginLoss", "--storage", url])
    assert bad.exit_code != 0 and "no default search space" in bad.output
