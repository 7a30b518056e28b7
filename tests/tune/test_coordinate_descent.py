"""Coordinate descent on analytic objectives: convergence, no repeats, exact resume, failures."""

import math

import optuna
import pytest

from pmlbal.tune import FAILED, CoordinateDescent, CoordinateDescentSampler, Dim, point_key

optuna.logging.set_verbosity(optuna.logging.WARNING)


def quad(t, noise=0.0):
    b = t.suggest_float("balance", 1 / 16, 16, log=True)
    tau = t.suggest_float("temperature", 0.01, 1.0, log=True)
    bs = t.suggest_int("batch_size", 16, 512, log=True)
    jitter = noise * math.sin(1000 * b + 77 * tau + bs)  # deterministic "noise"
    return -(math.log2(b) - 1.3) ** 2 - math.log2(tau / 0.1) ** 2 - 0.3 * (math.log2(bs) - 7) ** 2 + jitter


def params_seq(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_converges_on_quadratic_in_log_space_and_stops_early(noise):
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler())
    study.optimize(lambda t: quad(t, noise), n_trials=300)
    assert len(study.trials) < 60  # stopped itself, far before 300
    p = study.best_params
    assert abs(math.log2(p["balance"]) - 1.3) <= 0.125 + 1e-9
    assert p["batch_size"] == 128 and abs(math.log2(p["temperature"] / 0.1)) < 0.13
    assert len(set(params_seq(study))) == len(study.trials)  # no probe ran twice


def test_ridge_with_coupled_optimum():
    def ridge(t):
        x, y = t.suggest_float("x", -4, 4), t.suggest_float("y", -4, 4)
        return -((x - y) ** 2) - 0.2 * (x + y - 3) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(step={"x": 1.0, "y": 1.0}))
    study.optimize(ridge, n_trials=400)
    assert study.best_value > -0.05
    assert abs(study.best_params["x"] - 1.5) < 0.3 and abs(study.best_params["y"] - 1.5) < 0.3


def test_categorical_and_minimize():
    def f(t):
        loss = t.suggest_categorical("agg", ["nonzero", "mean", "pooled"])
        m = t.suggest_float("margin", 0.0, 2.0)
        return {"nonzero": 1.0, "mean": 0.2, "pooled": 0.5}[loss] + (m - 0.8) ** 2

    study = optuna.create_study(direction="minimize", sampler=CoordinateDescentSampler())
    study.optimize(f, n_trials=200)
    assert study.best_params["agg"] == "mean" and abs(study.best_params["margin"] - 0.8) < 0.05
    assert len(set(params_seq(study))) == len(study.trials)


def test_interrupted_search_resumes_trial_for_trial(tmp_path):
    full = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler())
    full.optimize(quad, n_trials=300)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    first = optuna.create_study(study_name="s", storage=storage, direction="maximize", sampler=CoordinateDescentSampler())
    first.optimize(quad, n_trials=9)  # "killed" after 9 trials
    resumed = optuna.load_study(study_name="s", storage=storage, sampler=CoordinateDescentSampler())
    resumed.optimize(quad, n_trials=300)
    assert params_seq(resumed) == params_seq(full)


def test_failed_probes_count_as_no_improvement():
    def f(t):
        x = t.suggest_float("x", 1 / 64, 64, log=True)
        if x > 6:
            raise RuntimeError("diverged")
        return -(math.log2(x) - 2) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler())
    study.optimize(f, n_trials=100, catch=(RuntimeError,))
    assert study.best_params["x"] == pytest.approx(4.0) and study.best_value > -1e-9
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)


def test_core_probes_in_parallel_and_waits_at_the_barrier():
    dims = [Dim("b", "log", 0.25, 4.0), Dim("bs", "log2-int", 16, 256)]
    cd = CoordinateDescent(dims, x0={"b": 1.0, "bs": 64})
    first = cd.ask({})
    assert first.action == "probe" and first.probes == [{"b": 1.0, "bs": 64}]
    hist = {point_key(first.probes[0], dims): 0.0}
    pair = cd.ask(hist)
    assert {p["b"] for p in pair.probes} == {2.0, 0.5} and len(pair.probes) == 2  # up and down at once
    one_running = cd.ask(hist, running=pair.probes[:1])
    assert one_running.probes == pair.probes[1:]
    assert cd.ask(hist, running=pair.probes).action == "wait"
    hist[point_key(pair.probes[0], dims)] = FAILED
    hist[point_key(pair.probes[1], dims)] = FAILED
    assert cd.ask(hist).probes[0]["bs"] in (128, 32)  # next coordinate


def test_budget_stops_the_search():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=7))
    study.optimize(quad, n_trials=100)
    assert len(study.trials) == 7


@pytest.mark.parametrize(
    "ctor, word",
    [
        (lambda: Dim("b", "exp", 0, 1), "scale"),
        (lambda: Dim("b", "log", 0.0, 1.0), "low > 0"),
        (lambda: Dim("b", "linear", 2.0, 1.0), "low <= high"),
        (lambda: Dim("c", "categorical"), "choices"),
        (lambda: CoordinateDescent([Dim("b", "log", 1, 2)], x0={"t": 1}), "unknown coordinate"),
        (lambda: CoordinateDescent([Dim("b", "log", 1, 2)], budget=0), "budget"),
        (lambda: CoordinateDescent([]), "empty"),
        (lambda: CoordinateDescent([Dim("c", "categorical", choices=("a",))], x0={"c": "z"}), "not one of"),
    ],
)
def test_bad_arguments(ctor, word):
    with pytest.raises(ValueError, match=word):
        ctor()


def test_pruned_probes_are_not_retried_but_failed_ones_are_once():
    seen = []

    def f(t):
        x = t.suggest_float("x", 1 / 64, 64, log=True)
        seen.append(x)
        if x > 6:
            raise optuna.TrialPruned()
        if x < 0.6:
            raise RuntimeError("diverged")
        return -(math.log2(x) - 2) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler())
    study.optimize(f, n_trials=100, catch=(RuntimeError,))
    assert study.best_params["x"] == pytest.approx(4.0)
    pruned = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    failed = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert pruned and all(seen.count(x) == 1 for x in pruned)
    assert failed and all(seen.count(x) == 2 for x in failed)
