"""CoordinateDescentSampler keeps Optuna's sampler contract: Optuna's own generic sampler tests,
ask-and-tell, budgets, seeds, step grids, conditional and changing spaces, multi-objective refusal."""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
from optuna.trial import TrialState

from pmlbal.tune import CoordinateDescent, CoordinateDescentSampler, Dim, Result, pick, point_key

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- Optuna's generic sampler tests, run as Optuna runs them for its own samplers ---------------------------
# Their objectives expect every requested trial to run: budgets of at least the 20 trials they ask
# (a smaller budget, or version 1's convergence, stops the study by design, tested below).
@pytest.mark.parametrize("budget", [20, 100])
class TestOptunaBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self, budget):
        return lambda: CoordinateDescentSampler(budget=budget, seed=0)


@pytest.mark.parametrize("budget", [None, 8, 100])
class TestOptunaRelative(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self, budget):
        return lambda: CoordinateDescentSampler(budget=budget, seed=0)


class TestOptunaSingleObjectiveOnly(SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: CoordinateDescentSampler(budget=8, seed=0)


# -- budgets and the end of a search ---------------------------------------------------------------------
def objective(t):
    b = t.suggest_float("balance", 1 / 16, 16, log=True)
    tau = t.suggest_float("temperature", 1 / 64, 1.0, log=True)
    bs = t.suggest_int("batch_size", 8, 64, log=True)
    return -(math.log2(b) - 1.3) ** 2 - 2 * (math.log2(tau) + 3.4) ** 2 - 0.5 * (math.log2(bs) - 4) ** 2


def test_optimize_spends_the_budget_and_stops_there():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=20, seed=0))
    study.optimize(objective, n_trials=500)
    assert len(study.trials) == 20
    runs = [t.user_attrs["run"] for t in study.trials]
    assert runs.count(0) == 15 and sorted(set(runs)) != [0]  # R = 5 re-runs in the confirm phase
    best = pick(study)
    assert best.runs >= 2 and best.value == pytest.approx(np.mean([study.trials[i].value for i in best.trials]))


def test_the_sampler_replays_the_engine():
    """The sampler proposes exactly what the engine decides on the same trials (one engine)."""
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("batch_size", "log2-int", 8, 64), Dim("temperature", "log", 1 / 64, 1.0)]
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=16, seed=3, search_space=dims))
    study.optimize(objective, n_trials=16)
    cd, results = CoordinateDescent(dims, budget=16, seed=3), []
    for t in study.trials:
        d = cd.ask(results)
        assert (point_key(t.params, dims), t.user_attrs["run"]) == (point_key(d.probes[0], dims), d.runs[0])
        results.append(Result(t.params, t.user_attrs["run"], t.value))


def test_the_objective_sees_its_run_index_and_reruns_have_new_ones():
    seen = []

    def f(t):
        seen.append(t.user_attrs["run"])  # read before any suggest: a seed offset for the training run
        return objective(t)

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=12, seed=1, search_space={
        "balance": optuna.distributions.FloatDistribution(1 / 16, 16, log=True),
        "temperature": optuna.distributions.FloatDistribution(1 / 64, 1.0, log=True),
        "batch_size": optuna.distributions.IntDistribution(8, 64, log=True)}))
    study.optimize(f, n_trials=12)
    assert seen == [t.user_attrs["run"] for t in study.trials]
    by_point = {}
    for t in study.trials:
        by_point.setdefault(tuple(sorted(t.params.items())), []).append(t.user_attrs["run"])
    assert all(sorted(r) == list(range(len(r))) for r in by_point.values())  # 0, 1, 2, ... per point


def test_ask_and_tell_past_the_budget_and_after_convergence_never_raises(caplog):
    for sampler in (CoordinateDescentSampler(budget=6, seed=0), CoordinateDescentSampler(seed=0)):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for _ in range(60):  # version 1 converges within ~30 trials here; budget 6 is long spent
            trial = study.ask()
            study.tell(trial, objective(trial))
        assert len(study.trials) == 60 and all(t.state == TrialState.COMPLETE for t in study.trials)
        late = study.trials[-10:]
        best = pick(study)
        # Documented: a trial asked past the end re-runs a top-3 point with a new run index.
        assert all(t.user_attrs["run"] >= 1 for t in late)
        assert best.runs >= 3


def test_stop_is_only_called_inside_optimize():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=3, seed=0))
    study.optimize(objective, n_trials=2)
    trial = study.ask()
    study.tell(trial, objective(trial))  # the budget is spent here: stop() would raise outside optimize
    study.optimize(objective, n_trials=5)  # inside optimize it ends the loop at once
    assert len(study.trials) == 4


def test_parallel_jobs_share_one_search():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=24, seed=0))
    study.optimize(objective, n_trials=24, n_jobs=3)
    assert len(study.trials) == 24 and all(t.state == TrialState.COMPLETE for t in study.trials)
    first_runs = [tuple(sorted(t.params.items())) for t in study.trials if t.user_attrs["run"] == 0]
    assert len(first_runs) == len(set(first_runs))  # no point ran twice as a first run


def test_multi_objective_is_refused_with_the_reason():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=CoordinateDescentSampler(seed=0))
    with pytest.raises(ValueError, match="one objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0), n_trials=1)


# -- seeds ----------------------------------------------------------------------------------------------
def points(sampler, n=12):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n)
    return [tuple(sorted(t.params.items())) for t in study.trials]


def test_seed_drives_the_search_and_reseed_keeps_the_plan():
    assert points(CoordinateDescentSampler(budget=12, seed=0)) == points(CoordinateDescentSampler(budget=12, seed=0))
    assert points(CoordinateDescentSampler(budget=12, seed=0)) != points(CoordinateDescentSampler(budget=12, seed=1))
    reseeded = CoordinateDescentSampler(budget=12, seed=0)
    reseeded.reseed_rng()  # as QMCSampler: the plan stays a function of seed and trials
    assert points(reseeded) == points(CoordinateDescentSampler(budget=12, seed=0))
    assert isinstance(CoordinateDescentSampler(budget=12).seed, int)  # seed=None draws one and keeps it


def test_a_study_resumed_in_another_process_continues_trial_for_trial(tmp_path):
    full = points(CoordinateDescentSampler(budget=16, seed=2), 16)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    first = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=CoordinateDescentSampler(budget=16, seed=2))
    first.optimize(objective, n_trials=7)  # "killed" after 7 trials
    resumed = optuna.load_study(study_name="s", storage=storage, sampler=CoordinateDescentSampler(budget=16, seed=2))
    resumed.optimize(objective, n_trials=100)
    assert [tuple(sorted(t.params.items())) for t in resumed.trials] == full


# -- steps, grids and types ---------------------------------------------------------------------------------
def test_int_steps_stay_on_their_grid():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(lambda t: -abs(t.suggest_int("k", 0, 10, step=2) - 7), n_trials=20)
    ks = [t.params["k"] for t in study.trials]
    assert all(isinstance(k, int) and k % 2 == 0 and 0 <= k <= 10 for k in ks)
    assert study.best_params["k"] in (6, 8)


def test_float_steps_move_by_whole_steps_and_the_search_moves():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(lambda t: -(t.suggest_float("x", 0, 10, step=0.5) - 7.3) ** 2, n_trials=40)
    xs = [t.params["x"] for t in study.trials]
    assert all(x * 2 == pytest.approx(round(x * 2)) for x in xs)
    assert len(set(xs)) > 3 and study.best_params["x"] == 7.5
    assert len(set(xs)) == len(xs)  # no probe repeated (Optuna never had to fall back)


def test_log_int_without_power_of_two_bounds():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=16, seed=0))
    study.optimize(lambda t: -abs(math.log2(t.suggest_int("n", 5, 100, log=True)) - 5), n_trials=16)
    ns = [t.params["n"] for t in study.trials]
    assert all(isinstance(n, int) and 5 <= n <= 100 for n in ns) and abs(pick(study).params["n"] - 32) <= 8


# -- dynamic spaces --------------------------------------------------------------------------------------
def test_conditional_space_is_searched_per_parameter():
    def f(t):
        if t.suggest_categorical("x", [True, False]):
            return 1.0 - (t.suggest_float("y", 0, 1) - 0.3) ** 2
        return -(t.suggest_float("z", 0, 1) - 0.6) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=30, seed=0))
    study.optimize(f, n_trials=30)
    assert len(study.trials) == 30
    ys = [t.params["y"] for t in study.trials if "y" in t.params]
    assert len(set(ys)) >= 5  # y is sampled independently, not frozen at one value
    assert study.best_params["x"] is True and pick(study).params["x"] is True


def test_a_changed_range_restarts_the_plan_instead_of_sticking():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=12, seed=0))
    study.optimize(lambda t: -(t.suggest_float("x", 0, 10) - 3) ** 2, n_trials=12)
    study.optimize(lambda t: -(t.suggest_float("x", 20, 30) - 24) ** 2, n_trials=12)
    later = [t.params["x"] for t in study.trials[12:]]
    assert all(20 <= x <= 30 for x in later) and len(set(later)) > 4
    assert max(t.value for t in study.trials[12:]) > -1.0


def test_first_trial_without_a_known_space_runs_the_defaults():
    sampler = CoordinateDescentSampler(budget=8, seed=0, x0={"balance": 2.0})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].params == {"balance": 2.0, "temperature": 0.125, "batch_size": 16}


def test_the_docs_ask_and_tell_example_runs_as_written():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "tuning.md").read_text()
    block = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "CoordinateDescentSampler" in b]
    assert block, "docs/tuning.md has no CoordinateDescentSampler example"
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block[0], "docs/tuning.md", "exec"), scope)  # noqa: S102 - our own documentation
    study, best = scope["study"], scope["best"]
    assert len(study.trials) == scope["budget"] and best.runs >= 2


# -- found by review ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [None, 20])
def test_large_log_bounds_do_not_repeat_the_edge_point(budget):
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=budget, seed=0))
    study.optimize(lambda t: math.log(t.suggest_float("x", 1, 1e4, log=True)), n_trials=60)
    first = [t.params["x"] for t in study.trials if t.user_attrs["run"] == 0]
    assert len(first) == len(set(first))  # the edge point 1e4 runs once as a first run
    assert len(study.trials) == (20 if budget else len(study.trials)) and len(study.trials) < 60
    best = pick(study)  # the defaults unless a confirmed point beats them; only the budgeted engine confirms
    assert best.params["x"] == pytest.approx(1e4) if budget else best.is_default


def test_parallel_jobs_stop_at_the_budget_even_with_trials_running():
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(budget=16, seed=1))

    def slow(t):
        import time

        time.sleep(0.01)
        return objective(t)

    study.optimize(slow, n_trials=80, n_jobs=4)
    assert 16 <= len(study.trials) <= 16 + 4  # at most one trial per thread past the budget (was: all 80)
    first = [tuple(sorted(t.params.items())) for t in study.trials if t.user_attrs["run"] == 0]
    assert len(first) == len(set(first))


def test_pick_never_chooses_a_point_whose_run_failed_for_good():
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    add = lambda x, value, run, state=TrialState.COMPLETE: study.add_trial(optuna.trial.create_trial(  # noqa: E731
        params={"x": x}, distributions=dist, value=value, state=state, user_attrs={"run": run}))
    add(0.2, 0.90, 0)
    add(0.2, None, 1, TrialState.FAIL)
    add(0.2, None, 1, TrialState.FAIL)  # its re-run raised twice: the configuration is not reliable
    add(0.7, 0.85, 0)
    add(0.7, 0.84, 1)
    add(0.5, 0.80, 0)
    add(0.5, None, 1, TrialState.FAIL)
    add(0.5, 0.79, 1)  # raised once, then ran: fine
    best = pick(study)
    assert best.params == {"x": 0.7} and best.runs == 2 and best.value == pytest.approx(0.845)
