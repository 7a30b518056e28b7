"""The tuner's rules at the edges the hand mutations of issue 34 survived: a plateau, a diverged run among
confirmed runs, the confirm phase's three top points, the paired pick against the defaults."""

from __future__ import annotations

import math
import signal

import pytest

from pmlbal.tune.coordinate_descent import CoordinateDescent
from pmlbal.tune.dims import Dim, point_key
from pmlbal.tune.ranking import TOP_POINTS, confirm_choice, paired_gain
from pmlbal.tune.trials import Result, TrialTable

DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]


def drive(cd: CoordinateDescent, f, limit: int = 500) -> list[Result]:
    """Answer every probe at once with f(point, run) until the engine says done; fails past `limit`."""
    results: list[Result] = []
    for _ in range(limit):
        d = cd.ask(results)
        if d.action == "done":
            return results
        assert d.action == "probe", d.action  # nothing runs elsewhere: never "wait"
        results += [Result(p, r, f(p, r)) for p, r in zip(d.probes, d.runs)]
    pytest.fail(f"the search did not end within {limit} asks")


@pytest.mark.parametrize("budget", [None, 12])
def test_a_flat_objective_ends_with_or_without_a_budget(budget):
    def stuck(*_):
        raise TimeoutError("ask() did not return: the descent loops on a plateau (a move on a tie?)")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(60)  # a replay that loops never returns from one ask(); the limit is far above a second
    try:
        results = drive(CoordinateDescent(DIMS, budget=budget, seed=3), lambda p, r: 0.5)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if budget is not None:
        assert len(results) == budget
    else:  # one descent from the centre: a sweep at minimum steps moved nothing
        assert 1 < len(results) < 100


def test_a_move_needs_more_than_tol():
    # Every probe is better than the start by exactly tol: none is taken, the start stays the best.
    cd = CoordinateDescent(DIMS, tol=0.1, budget=None)
    start = point_key(cd.plan.x0, DIMS)
    results = drive(cd, lambda p, r: 0.5 if point_key(p, DIMS) == start else 0.6)
    moves = {point_key(x.point, DIMS) for x in results}
    assert len(results) == len(moves) and all(x.value == 0.6 for x in results[1:])
    assert cd.ask(results).action == "done"


def _table(runs: dict[tuple[float, float], list[float | None]], x0=None, noise: float = 0.0) -> TrialTable:
    results = []
    for (b, t), values in runs.items():
        for k, v in enumerate(values):
            results.append(Result({"balance": b, "temperature": t}, k, v, final=v is None))
    return TrialTable(DIMS, 1, results, (), x0 or {}, noise)


def test_a_point_with_a_diverged_run_is_never_the_pick():
    # runs 0.90, 0.90 and a third that failed for good, against 0.85, 0.84 (issue 34)
    table = _table({(1.0, 0.1): [0.90, 0.90, None], (2.0, 0.1): [0.85, 0.84]})
    pick = table.pick()
    assert pick.params == {"balance": 2.0, "temperature": 0.1} and pick.runs == 2
    assert math.isclose(pick.value, 0.845)
    assert table.ranked()[0] == point_key({"balance": 2.0, "temperature": 0.1}, DIMS)


def test_the_confirm_choice_takes_from_the_top_three():
    assert TOP_POINTS == 3
    top = ["a", "b", "c"]
    counts = {"a": 3, "b": 3, "c": 2}
    assert confirm_choice(top, counts.get) == "c"  # the third point is still re-run
    assert confirm_choice(top, {"a": 2, "b": 2, "c": 2}.get) == "a"  # ties to the better ranked


def test_the_pick_is_the_defaults_unless_a_point_beats_them_on_paired_runs():
    x0 = {"balance": 1.0, "temperature": 0.1}
    close = _table({(1.0, 0.1): [0.70, 0.71], (2.0, 0.1): [0.71, 0.72]}, x0, noise=0.0156)
    assert close.pick().is_default  # +1 point over 2 pairs, standard error 1.56 / sqrt 2: not shown
    far = _table({(1.0, 0.1): [0.70, 0.71], (2.0, 0.1): [0.75, 0.76]}, x0, noise=0.0156)
    pick = far.pick()
    assert not pick.is_default and pick.params["balance"] == 2.0 and pick.vs_default.pairs == 2
    gain = paired_gain({0: 0.75, 1: 0.76}, {0: 0.70, 1: 0.71}, noise=0.0156)
    assert math.isclose(gain.mean, 0.05) and math.isclose(gain.se, 0.0156 / math.sqrt(2))
    # The defaults ranking first: still the pick, and compared with the best other point (the report
    # says by how much it fell short, not that no other point ended well).
    first = _table({(1.0, 0.1): [0.74, 0.74], (2.0, 0.1): [0.72, 0.73, 0.74]}, x0, noise=0.0156)
    assert first.mean(point_key(x0, DIMS)) > first.mean(point_key({"balance": 2.0, "temperature": 0.1}, DIMS))
    chosen = first.pick()  # strictly first: the defaults' own branch, not a challenger that fell short
    assert chosen.is_default and chosen.vs_default.pairs == 2 and math.isclose(chosen.vs_default.mean, -0.015)


def test_a_zero_noise_tie_never_beats_the_defaults():
    x0 = {"balance": 1.0, "temperature": 0.1}
    tie = _table({(1.0, 0.1): [0.70, 0.70], (2.0, 0.1): [0.70, 0.70]}, x0, noise=0.0).pick()
    assert tie.is_default and tie.vs_default.mean == 0 and tie.vs_default.se == 0 and not tie.vs_default.beats


def test_the_paired_standard_error_divides_by_n_minus_one():
    gain = paired_gain({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0}, noise=0.0)
    # Differences 1, 2, 4: mean 7/3, sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3.
    assert math.isclose(gain.mean, 7 / 3) and math.isclose(gain.se, math.sqrt(7 / 3) / math.sqrt(3))
    assert math.isclose(paired_gain({0: 1.0}, {0: 0.0}, noise=0.2).se, 0.2)  # one pair: the noise floor


def _lost_trial(number: int, balance: float):
    import optuna
    from optuna.trial import TrialState

    from pmlbal.tune.trials import LOST

    t = optuna.trial.create_trial(state=TrialState.FAIL, params={"balance": balance},
                                  distributions={"balance": optuna.distributions.FloatDistribution(1 / 16, 16, log=True)},
                                  user_attrs={"error": f"{LOST}worker died"})
    t.number = number
    return t


def test_a_run_lost_with_its_worker_is_forgiven_up_to_lost_retries_times_and_no_more():
    from pmlbal.tune.trials import LOST_RETRIES, forgiven_losses

    at_limit = [_lost_trial(n, 1.0) for n in range(LOST_RETRIES)]
    assert forgiven_losses(at_limit, ["balance"]) == set(range(LOST_RETRIES))  # run again each time
    past = at_limit + [_lost_trial(LOST_RETRIES, 1.0)]
    assert forgiven_losses(past, ["balance"]) == set()  # a run that kills every worker is a failure
    other = past + [_lost_trial(99, 2.0)]
    assert forgiven_losses(other, ["balance"]) == {99}  # counted per point


def test_one_unconfirmed_run_never_replaces_the_defaults_and_the_report_says_why():
    """The fault trial's `tune --dataset digits --budget 6`: the defaults and one other point, one 3-fold
    trial each, the other ahead by +0.038 against a noise floor of 0.035: ahead, but never re-run."""
    from pmlbal.tune.progress import runs_text
    from pmlbal.tune.report import versus_defaults

    x0 = {"balance": 1.0, "temperature": 0.1}
    table = _table({(1.0, 0.1): [0.700], (2.0, 0.1): [0.738]}, x0, noise=0.035)
    pick = table.pick()
    assert pick.is_default and pick.vs_default.beats and pick.vs_default.pairs == 1
    line = versus_defaults(pick)
    assert "must be confirmed (re-run) to replace them" in line and "+0.0380" in line
    confirmed = _table({(1.0, 0.1): [0.700, 0.700], (2.0, 0.1): [0.738, 0.738]}, x0, noise=0.035).pick()
    assert not confirmed.is_default  # the same lead over two paired runs: now it is the pick
    assert runs_text(1, folds=3) == "1 trial of 3 fold runs" and runs_text(2, folds=3) == "2 trials of 3 fold runs each"
    assert runs_text(1) == "1 run" and runs_text(2) == "2 runs"
