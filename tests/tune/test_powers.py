"""TPE and random search draw batch sizes as powers of two (a draw of 79 made a trial fail: no
batch of 79 holds m = 4 samples per class)."""

import optuna
import pytest
from optuna.distributions import IntDistribution

from pmlbal.tune.coordinate_descent import Dim
from pmlbal.tune.powers import is_power_of_two_range, nearest_power_of_two
from pmlbal.tune.run import make_sampler
from pmlbal.tune.spaces import suggest


def test_nearest_power_of_two_rounds_in_log_scale_within_the_bounds():
    dist = IntDistribution(32, 256, log=True)
    got = {v: nearest_power_of_two(v, dist) for v in (32, 44, 46, 79, 112, 166, 200, 256, 1)}
    assert got == {32: 32, 44: 32, 46: 64, 79: 64, 112: 128, 166: 128, 200: 256, 256: 256, 1: 32}
    assert is_power_of_two_range(dist) and not is_power_of_two_range(IntDistribution(30, 250, log=True))
    assert not is_power_of_two_range(IntDistribution(32, 256))


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_optuna_searches_record_and_train_powers_of_two(search):
    dims = [Dim("batch_size", "log2-int", 32, 256), Dim("epochs", "log-int", 3, 50), Dim("lr", "log", 1e-3, 1e-1)]
    study = optuna.create_study(direction="maximize", sampler=make_sampler(search, dims, seed=0))
    seen = []

    def objective(trial):
        values = {d.name: suggest(trial, d) for d in dims}
        seen.append(values)
        return -abs(values["batch_size"] - 100) - values["lr"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=30)
    batches = {v["batch_size"] for v in seen}
    assert batches <= {32, 64, 128, 256} and len(batches) >= 3
    assert [t.params["batch_size"] for t in study.trials] == [v["batch_size"] for v in seen]  # recorded = trained
    assert any(v["epochs"] not in (4, 8, 16, 32) for v in seen)  # other integer log ranges are left alone
