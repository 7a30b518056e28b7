"""The search engine (docs/tuner.md): version 2's phases on analytic objectives, version 1's descent,
exact resume, failures, and the coordinates' scales and grids."""

import math
from collections import Counter

import numpy as np
import optuna
import pytest
from scipy.stats import qmc

from pmlbal.tune import FAILED, CoordinateDescent, CoordinateDescentSampler, Dim, Result, pick, point_key

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0), Dim("batch_size", "log2-int", 8, 64)]
EVERY_SCALE = [Dim("b", "log", 1 / 16, 16), Dim("bs", "log2-int", 8, 512), Dim("n", "log-int", 3, 100),
               Dim("m", "linear", 0.0, 0.8), Dim("q", "linear", -1.0, 1.0, grid=0.25), Dim("k", "int", 0, 10, grid=2),
               Dim("agg", "categorical", choices=("mean", "sum", "pooled"))]


def quad(p):
    return (-(math.log2(p["balance"]) - 1.3) ** 2 - 2 * (math.log2(p["temperature"]) + 3.4) ** 2
            - 0.5 * (math.log2(p["batch_size"]) - 4) ** 2)


def noisy(p, run, sd=0.5):
    """A deterministic noisy draw per (point, run): the same answer whenever it is asked again."""
    seed = abs(hash((round(math.log2(p["balance"]), 9), round(math.log2(p["temperature"]), 9), p["batch_size"], run)))
    return quad(p) + sd * np.random.default_rng(seed % 2**32).standard_normal()


def drive(cd, value=lambda p, run: quad(p), results=None, stop_after=None):
    """Answer every probe at once; (results, phases, final decision)."""
    results, phases = list(results or []), []
    while (d := cd.ask(results)).action == "probe":
        for p, run in zip(d.probes, d.runs):
            if stop_after is not None and len(results) >= stop_after:
                return results, phases, d
            results.append(Result(p, run, value(p, run)))
            phases.append(d.phase)
    return results, phases, d


# -- version 2: phases ------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, sizes", [(3, (0, 3, 0)), (4, (1, 2, 1)), (16, (4, 8, 4)), (33, (8, 17, 8))])
def test_phase_sizes(budget, sizes):
    results, phases, final = drive(CoordinateDescent(DIMS, budget=budget, seed=1))
    assert len(results) == budget and final.action == "done"
    counts = Counter(phases)
    first_runs = [r for r in results if r.run == 0]
    assert len(first_runs) == sizes[0] + sizes[1]  # phases 1 and 2 run each point once
    assert counts["explore"] + counts["descend"] == sizes[0] + sizes[1] and counts["confirm"] == sizes[2]
    assert len(results) - len(first_runs) == sizes[2]
    if sizes[0] == 0:  # R = 0: the descent starts at the defaults (centre of the box)
        assert results[0].point == {"balance": 1.0, "temperature": 0.125, "batch_size": 16}


def test_phase_one_is_optunas_scrambled_sobol_sequence_mapped_to_each_scale():
    cd = CoordinateDescent(EVERY_SCALE, budget=64, seed=7)
    plan = cd.plan.explore_points()
    assert len(plan) == 16
    assert len({point_key(p, EVERY_SCALE) for p in plan}) == 16  # distinct
    for p in plan:
        for d in EVERY_SCALE:
            assert d.contains(p[d.name]), (d, p[d.name])
        assert p["bs"] in (8, 16, 32, 64, 128, 256, 512) and isinstance(p["bs"], int)
        assert isinstance(p["n"], int) and 3 <= p["n"] <= 100
        assert isinstance(p["k"], int) and p["k"] % 2 == 0
        assert (p["q"] + 1.0) / 0.25 == pytest.approx(round((p["q"] + 1.0) / 0.25))
    # Independent reference: scipy's scrambled Sobol with the same seed (what QMCSampler draws).
    u = qmc.Sobol(len(EVERY_SCALE), scramble=True, seed=7).random(1)[0]
    assert plan[0]["b"] == pytest.approx(2 ** (-4 + 8 * u[0]))
    assert plan[0]["m"] == pytest.approx(0.8 * u[3])
    assert plan[0]["agg"] == ("mean", "sum", "pooled")[int(3 * u[6])]


def test_seed_changes_the_plan_and_fixes_it():
    a, b = CoordinateDescent(DIMS, budget=33, seed=0), CoordinateDescent(DIMS, budget=33, seed=1)
    assert a.plan.explore_points() != b.plan.explore_points()
    assert a.plan.explore_points() == CoordinateDescent(DIMS, budget=33, seed=0).plan.explore_points()
    assert a.plan.restart_point(3) != b.plan.restart_point(3) and a.plan.restart_point(3) == a.plan.restart_point(3)


def test_descent_starts_from_the_best_explored_point_and_never_reruns_in_phase_two():
    cd = CoordinateDescent(DIMS, budget=33, seed=3)
    results, phases, _ = drive(cd, noisy)
    explored = [r for r, ph in zip(results, phases) if ph == "explore"]
    descent = [r for r, ph in zip(results, phases) if ph == "descend"]
    best = max(explored, key=lambda r: r.value)
    first_probes = descent[:2]  # the first coordinate's up/down probes around the best explored point
    for r in first_probes:
        differ = [d.name for d in DIMS if r.point[d.name] != best.point[d.name]]
        assert differ == ["balance"]
    keys = [point_key(r.point, DIMS) for r in explored + descent]
    assert len(keys) == len(set(keys)) and all(r.run == 0 for r in explored + descent)


def test_descent_restarts_when_it_converges_before_the_phase_budget():
    dims = [Dim("x", "int", 0, 8)]  # 9 points: a descent converges in a few probes
    results, phases, final = drive(CoordinateDescent(dims, budget=12, seed=0),
                                   lambda p, run: -abs(p["x"] - 5))
    assert Counter(phases)["confirm"] == 12 - len({point_key(r.point, dims) for r in results})
    assert len(results) == 12 and final.best == {"x": 5}
    # A box smaller than the phase budget: once every point ran, the confirm phase takes the rest.
    tiny = [Dim("c", "categorical", choices=("a", "b"))]
    results, phases, final = drive(CoordinateDescent(tiny, budget=16), lambda p, run: {"a": 1.0, "b": 0.0}[p["c"]])
    assert len(results) == 16 and len({r.point["c"] for r in results if r.run == 0}) == 2
    assert final.best == {"c": "a"} and final.best_runs >= 7


def test_confirm_reruns_only_the_top_three_with_fresh_runs_and_picks_the_best_mean():
    results, phases, final = drive(CoordinateDescent(DIMS, budget=33, seed=5), noisy)
    first = {point_key(r.point, DIMS): r.value for r in results if r.run == 0}
    confirm = [r for r, ph in zip(results, phases) if ph == "confirm"]
    assert len(confirm) == 8
    top3_before = sorted(first, key=lambda k: -first[k])[:3]
    rerun_keys = {point_key(r.point, DIMS) for r in confirm}
    assert point_key(confirm[0].point, DIMS) in top3_before  # the first re-run is of a top-3 point
    per_point = {}
    for r in results:
        per_point.setdefault(point_key(r.point, DIMS), []).append(r.run)
    for k in rerun_keys:
        assert sorted(per_point[k]) == list(range(len(per_point[k])))  # runs 0, 1, 2, ...: fresh seeds
    # Closed form of the pick: the highest mean over each point's runs.
    means = {k: np.mean([noisy(dict(zip([d.name for d in DIMS], k)), run) for run in runs])
             for k, runs in per_point.items()}
    best = max(means, key=means.get)
    assert point_key(final.best, DIMS) == best and final.best_value == pytest.approx(means[best])
    assert final.best_runs == len(per_point[best]) >= 2


def test_confirm_phase_reruns_in_parallel_rounds():
    cd = CoordinateDescent(DIMS, budget=20, seed=2)
    results, _, d = drive(cd, stop_after=15)  # phases 1 and 2 done (20 - 20 // 4 first runs)
    x0 = {"balance": 1.0, "temperature": 0.125, "batch_size": 16}
    assert d.phase == "confirm" and len(d.probes) == 4 and d.runs == [1, 1, 1, 1]
    assert len({point_key(p, DIMS) for p in d.probes}) == 4  # one re-run for each of the top 3 ...
    assert d.probes[-1] == x0  # ... and for the defaults, the pick's reference
    running = list(zip(d.probes, d.runs))
    assert cd.ask(results, running=running[:1]).probes == d.probes[1:]  # the rest of the round
    assert cd.ask(results, running=running).action == "wait"  # the next round reads this one's values
    done = results + [Result(p, run, quad(p)) for p, run in running]
    last = cd.ask(done)
    assert last.action == "probe" and len(last.probes) == 1 and last.runs == [2]  # budget 20: one left
    assert cd.ask(done + [Result(last.probes[0], 2, 0.0)]).action == "done"


def test_interrupted_search_resumes_trial_for_trial():
    full, _, _ = drive(CoordinateDescent(DIMS, budget=33, seed=4), noisy)
    for n in (1, 8, 9, 20, 26, 30):
        part, _, _ = drive(CoordinateDescent(DIMS, budget=33, seed=4), noisy, stop_after=n)
        resumed, _, _ = drive(CoordinateDescent(DIMS, budget=33, seed=4), noisy, results=part)
        assert [(r.point, r.run) for r in resumed] == [(r.point, r.run) for r in full]


def test_failures_are_retried_once_then_count_as_failed():
    cd = CoordinateDescent([Dim("x", "log", 1 / 64, 64)], budget=None)
    first = cd.ask([])
    assert first.probes == [{"x": 1.0}] and first.runs == [0]
    assert cd.ask([Result({"x": 1.0}, 0, None)]).probes == [{"x": 1.0}]  # raised: asked again
    twice = [Result({"x": 1.0}, 0, None), Result({"x": 1.0}, 0, None)]
    assert {p["x"] for p in cd.ask(twice).probes} == {2.0, 0.5}  # failed twice: FAILED, move on
    assert cd.ask([Result({"x": 1.0}, 0, final=True)]).probes[0]["x"] in (2.0, 0.5)  # pruned: no retry
    assert cd.ask(twice).best is None  # a failed point is never the pick


def test_core_probes_in_parallel_and_waits_at_the_barrier():
    dims = [Dim("b", "log", 0.25, 4.0), Dim("bs", "log2-int", 16, 256)]
    cd = CoordinateDescent(dims, x0={"b": 1.0, "bs": 64})
    first = cd.ask()
    assert first.action == "probe" and first.probes == [{"b": 1.0, "bs": 64}]
    hist = [Result(first.probes[0], 0, 0.0)]
    pair = cd.ask(hist)
    assert {p["b"] for p in pair.probes} == {2.0, 0.5} and len(pair.probes) == 2  # up and down at once
    one_running = cd.ask(hist, running=pair.probes[:1])
    assert one_running.probes == pair.probes[1:]
    assert cd.ask(hist, running=pair.probes).action == "wait"
    filled = cd.ask(hist, running=pair.probes, fill_in=True)  # a sampler must return a point: a re-run
    assert filled.action == "probe" and filled.phase == "fill" and filled.probes == [first.probes[0]]
    assert filled.runs == [1]
    hist += [Result(p, 0, FAILED) for p in pair.probes]
    assert cd.ask(hist).probes[0]["bs"] in (128, 32)  # next coordinate


# -- version 1 (no budget): one descent -----------------------------------------------------------------
def sampler_quad(t, noise=0.0):
    b = t.suggest_float("balance", 1 / 16, 16, log=True)
    tau = t.suggest_float("temperature", 0.01, 1.0, log=True)
    bs = t.suggest_int("batch_size", 16, 512, log=True)
    jitter = noise * math.sin(1000 * b + 77 * tau + bs)  # deterministic "noise"
    return -(math.log2(b) - 1.3) ** 2 - math.log2(tau / 0.1) ** 2 - 0.3 * (math.log2(bs) - 7) ** 2 + jitter


def params_seq(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_version_one_converges_on_quadratic_in_log_space_and_stops_early(noise):
    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(lambda t: sampler_quad(t, noise), n_trials=300)
    assert len(study.trials) < 60  # stopped itself, far before 300
    p = study.best_params
    assert abs(math.log2(p["balance"]) - 1.3) <= 0.125 + 1e-9
    assert p["batch_size"] == 128 and abs(math.log2(p["temperature"] / 0.1)) < 0.13
    assert len(set(params_seq(study))) == len(study.trials)  # no probe ran twice


def test_version_one_on_a_ridge_with_coupled_optimum():
    def ridge(t):
        x, y = t.suggest_float("x", -4, 4), t.suggest_float("y", -4, 4)
        return -((x - y) ** 2) - 0.2 * (x + y - 3) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(step={"x": 1.0, "y": 1.0}, seed=0))
    study.optimize(ridge, n_trials=400)
    assert study.best_value > -0.05
    assert abs(study.best_params["x"] - 1.5) < 0.3 and abs(study.best_params["y"] - 1.5) < 0.3


def test_categorical_and_minimize():
    def f(t):
        loss = t.suggest_categorical("agg", ["nonzero", "mean", "pooled"])
        m = t.suggest_float("margin", 0.0, 2.0)
        return {"nonzero": 1.0, "mean": 0.2, "pooled": 0.5}[loss] + (m - 0.8) ** 2

    study = optuna.create_study(direction="minimize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(f, n_trials=200)
    assert study.best_params["agg"] == "mean" and abs(study.best_params["margin"] - 0.8) < 0.05
    assert len(set(params_seq(study))) == len(study.trials)
    budgeted = optuna.create_study(direction="minimize", sampler=CoordinateDescentSampler(budget=24, seed=0))
    budgeted.optimize(f, n_trials=24)
    assert pick(budgeted).params["agg"] == "mean" and pick(budgeted).runs >= 2


def test_failed_probes_count_as_no_improvement():
    def f(t):
        x = t.suggest_float("x", 1 / 64, 64, log=True)
        if x > 6:
            raise RuntimeError("diverged")
        return -(math.log2(x) - 2) ** 2

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(f, n_trials=100, catch=(RuntimeError,))
    assert study.best_params["x"] == pytest.approx(4.0) and study.best_value > -1e-9
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)


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

    study = optuna.create_study(direction="maximize", sampler=CoordinateDescentSampler(seed=0))
    study.optimize(f, n_trials=100, catch=(RuntimeError,))
    assert study.best_params["x"] == pytest.approx(4.0)
    pruned = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    failed = [t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert pruned and all(seen.count(x) == 1 for x in pruned)
    assert failed and all(seen.count(x) == 2 for x in failed)


# -- coordinates --------------------------------------------------------------------------------------
def test_grid_coordinates_move_by_whole_steps():
    d = Dim("x", "linear", 0.0, 10.0, grid=0.5)
    assert d.default_step() == 1.0 and d.default_min_step() == 0.5
    assert d.halve(1.0, 0.5) == 0.5 and d.halve(1.5, 0.5) == 0.5
    assert [y for _, y in d.neighbours(5.0, 1.0)] == [6.0, 4.0]
    assert d.snap(6.26) == 6.5 and d.snap(11.0) == 10.0
    k = Dim("k", "int", 0, 10, grid=2)
    assert k.centre() == 6 or k.centre() == 4  # (0 + 10) / 2 = 5 is off the grid
    assert all(isinstance(y, int) and y % 2 == 0 for _, y in k.neighbours(4, k.default_step()))
    odd = Dim("o", "int", 3, 9, grid=2)
    assert {odd.from_uniform(u) for u in np.linspace(0, 0.999, 50)} == {3, 5, 7, 9}


@pytest.mark.parametrize(
    "ctor, word",
    [
        (lambda: Dim("b", "exp", 0, 1), "scale"),
        (lambda: Dim("b", "log", 0.0, 1.0), "low > 0"),
        (lambda: Dim("b", "linear", 2.0, 1.0), "low <= high"),
        (lambda: Dim("c", "categorical"), "choices"),
        (lambda: Dim("b", "log2-int", 5, 7), "no power of two"),
        (lambda: Dim("b", "log", 1, 2, grid=0.1), "grid"),
        (lambda: CoordinateDescent([Dim("b", "log", 1, 2)], x0={"t": 1}), "unknown coordinate"),
        (lambda: CoordinateDescent([Dim("b", "log", 1, 2)], budget=0), "budget"),
        (lambda: CoordinateDescent([Dim("b", "log", 1, 2)], retries=-1), "retries"),
        (lambda: CoordinateDescent([]), "empty"),
        (lambda: CoordinateDescent([Dim("c", "categorical", choices=("a",))], x0={"c": "z"}), "not one of"),
    ],
)
def test_bad_arguments(ctor, word):
    with pytest.raises(ValueError, match=word):
        ctor()


def test_descent_halves_the_step_on_a_log_coordinate():
    # One log coordinate from x0 = 1 (log2 = 0), f peaked at log2 x = 0.7, version 1 (no budget).
    # Hand trace of docs/tuner.md's descent: step x2 probes 2 and 1/2, moves up to 2, tries 4 (worse);
    # a sweep that moves nothing halves the step to x2^0.5: probes 2^1.5 and 2^0.5, moves down to 2^0.5;
    # halved to x2^0.25 (the minimum): probes 2^0.75 and 2^0.25, moves to 2^0.75, converged.
    # Points already run are answered from the record, so each log2 value appears once.
    dims = [Dim("b", "log", 1 / 16, 16)]
    results, _, final = drive(CoordinateDescent(dims, x0={"b": 1.0}),
                              value=lambda p, run: -(math.log2(p["b"]) - 0.7) ** 2)
    assert [math.log2(r.point["b"]) for r in results] == pytest.approx([0, 1, -1, 2, 1.5, 0.5, 0.75, 0.25], abs=1e-9)
    assert all(r.run == 0 for r in results)
    # Version 1 re-runs nothing, so no point is confirmed: the pick stays the defaults (b = 1), with the
    # best unconfirmed point (2^0.75) named in the paired comparison as ahead on its one run.
    assert final.action == "done" and final.best["b"] == 1.0 and final.is_default
    assert final.vs_default.pairs == 1 and final.vs_default.mean == pytest.approx(0.7**2 - 0.05**2)


def test_a_run_that_raised_is_retried_even_when_it_was_the_last_of_the_budget():
    dims = [Dim("x", "log", 1 / 64, 64)]
    cd = CoordinateDescent(dims, budget=3, seed=0)
    results, _, _ = drive(cd, value=lambda p, run: -abs(math.log2(p["x"])), stop_after=2)
    last = cd.ask(results)
    assert last.action == "probe" and len(last.probes) == 1
    failed = results + [Result(last.probes[0], last.runs[0], None)]
    retry = cd.ask(failed)  # the budget counts runs: the retry of that run is free
    assert retry.action == "probe" and (retry.probes, retry.runs) == (last.probes, last.runs)
    assert cd.ask(failed + [Result(last.probes[0], last.runs[0], 0.0)]).action == "done"


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tol"):
        CoordinateDescent([Dim("x", "log", 1, 2)], tol=-0.1)


def test_a_default_off_the_powers_of_two_is_evaluated_as_given():
    """digits trains batches of 50: the study's first point is 50 itself (paired with the board's default
    row), the descent's batch-size steps from it go to 32 and 64, and its trials count as in the box."""
    from pmlbal.tune.spaces import default_point, search_space

    bs = Dim("batch_size", "log2-int", 8, 64)
    assert bs.keep(50) == 50 and bs.keep(50.0) == 50 and bs.keep(100) == 64 and bs.keep(5) == 8
    assert bs.contains(50) and not bs.contains(50.5) and not bs.contains(65)
    assert sorted(y for _, y in bs.neighbours(50, bs.default_step())) == [32, 64]
    dims = search_space("BalancedNTXentLoss", "digits")
    start = default_point("BalancedNTXentLoss", dims, {}, 50, 2e-3)
    assert start["batch_size"] == 50
    cd = CoordinateDescent(DIMS, x0={"balance": 1.0, "temperature": 0.07, "batch_size": 50}, budget=8)
    first = cd.ask([])
    assert first.probes[0]["batch_size"] == 50
