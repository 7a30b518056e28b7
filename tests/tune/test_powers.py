"""TPE and random search draw batch sizes as powers of two (a draw of 79 made a trial fail: no
batch of 79 holds m = 4 samples per class)."""

import collections

import optuna
import pytest
from optuna.distributions import IntDistribution

from pmlbal.tune.dims import Dim
from pmlbal.tune.powers import nearest_power_of_two, power_bounds, widened
from pmlbal.tune.run import make_sampler
from pmlbal.tune.spaces import suggest


def test_nearest_power_of_two_rounds_in_log_scale_within_the_powers_of_the_range():
    dist = IntDistribution(32, 256, log=True)
    got = {v: nearest_power_of_two(v, dist) for v in (32, 44, 46, 79, 112, 166, 200, 256, 1, 400)}
    assert got == {32: 32, 44: 32, 46: 64, 79: 64, 112: 128, 166: 128, 200: 256, 256: 256, 1: 32, 400: 256}
    assert power_bounds(IntDistribution(48, 300, log=True)) == (64, 256)  # bounds that are not powers
    assert nearest_power_of_two(50, IntDistribution(48, 300, log=True)) == 64
    assert (widened(dist).low, widened(dist).high) == (23, 362)


def _study(search, dims, n):
    study = optuna.create_study(direction="maximize", sampler=make_sampler(search, dims, seed=0))
    seen = []

    def objective(trial):
        values = {d.name: suggest(trial, d) for d in dims}
        seen.append(values)
        return -abs(values["batch_size"] - 100) - values["lr"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n)
    return study, seen


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_optuna_searches_record_and_train_powers_of_two(search):
    dims = [Dim("batch_size", "log2-int", 48, 300), Dim("epochs", "log-int", 4, 32), Dim("lr", "log", 1e-3, 1e-1)]
    study, seen = _study(search, dims, 30)
    batches = {v["batch_size"] for v in seen}
    assert batches <= {64, 128, 256} and len(batches) >= 2
    assert [t.params["batch_size"] for t in study.trials] == [v["batch_size"] for v in seen]  # recorded = trained
    # a log-scale integer that is not a log2-int coordinate is left alone, even between powers of two
    assert all(isinstance(v["epochs"], int) for v in seen) and any(v["epochs"] not in (4, 8, 16, 32) for v in seen)


def test_random_search_gives_every_power_the_same_chance():
    dims = [Dim("batch_size", "log2-int", 32, 256), Dim("lr", "log", 1e-3, 1e-1)]
    _, seen = _study("random", dims, 400)
    counts = collections.Counter(v["batch_size"] for v in seen)
    assert set(counts) == {32, 64, 128, 256} and min(counts.values()) >= 70  # 100 each expected; ends no longer halved
