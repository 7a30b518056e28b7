"""The one ranking rule (pmlbal.tune.ranking): best mean first; ties to more runs, then to the point
seen first. The engine's pick, its confirm rounds, `pick(study)` and the trajectory report agree on
every tie; flipping either tie-break fails these tests."""

import optuna
import pytest
from optuna.trial import TrialState

from pmlbal.tune import CoordinateDescent, Dim, Result, pick
from pmlbal.tune.ranking import best, rank_key, ranked
from pmlbal.tune.report import trajectory

optuna.logging.set_verbosity(optuna.logging.WARNING)
# "e", the first choice, is the engine's defaults (x0); it never runs here, so no pick is held to
# beating it (tests/tune/test_defaults.py holds the rule that compares with the defaults).
DIMS = [Dim("c", "categorical", choices=("e", "a", "b", "c", "d"))]


def test_ranked_breaks_equal_means_by_more_runs_then_first_seen():
    means = {"p": 0.5, "q": 0.5, "r": 0.5, "s": 0.75}
    runs = {"p": 1, "q": 2, "r": 1, "s": 1}
    seen = {"r": 0, "p": 1, "q": 2, "s": 3}
    assert ranked(means, means.get, runs.get, seen.get) == ["s", "q", "r", "p"]
    assert best([], means.get, runs.get, seen.get) is None
    assert rank_key(0.5, 2, 9) < rank_key(0.5, 1, 0) < rank_key(0.5, 1, 1)


def results(*rows):
    return [Result({"c": c}, run, value) for c, run, value in rows]


def study_of(*rows, direction="maximize"):
    study = optuna.create_study(direction=direction)
    dist = {"c": optuna.distributions.CategoricalDistribution(["a", "b", "c", "d"])}
    for c, run, value in rows:
        study.add_trial(optuna.trial.create_trial(params={"c": c}, distributions=dist, value=value,
                                                  state=TrialState.COMPLETE, user_attrs={"run": run}))
    return study


# Equal means (0.5): "b" has two runs, "a" one and was seen first.
MORE_RUNS = [("a", 0, 0.5), ("b", 0, 0.25), ("b", 1, 0.75)]
# Equal means and runs: "b" was seen first.
FIRST_SEEN = [("b", 0, 0.5), ("a", 0, 0.5)]


@pytest.mark.parametrize("rows, winner, n_runs", [(MORE_RUNS, "b", 2), (FIRST_SEEN, "b", 1)])
def test_engine_pick_and_report_break_a_tie_the_same_way(rows, winner, n_runs):
    decision = CoordinateDescent(DIMS, budget=len(rows)).confirm(results(*rows))
    assert decision.best == {"c": winner} and decision.best_runs == n_runs and decision.best_value == 0.5
    chosen = pick(study_of(*rows))
    assert chosen.params == {"c": winner} and chosen.runs == n_runs and chosen.value == 0.5
    assert trajectory(study_of(*rows))[-1]["best_runs"] == n_runs


def test_a_minimising_pick_breaks_ties_by_the_same_rule():
    rows = [("a", 0, 0.5), ("b", 0, 0.75), ("b", 1, 0.25), ("c", 0, 0.75)]
    assert pick(study_of(*rows, direction="minimize")).params == {"c": "b"}


def test_confirm_round_takes_the_first_seen_three_of_equal_points():
    rows = [("d", 0, 0.5), ("b", 0, 0.5), ("a", 0, 0.5), ("c", 0, 0.5)]
    d = CoordinateDescent(DIMS, budget=7).confirm(results(*rows))
    assert d.action == "probe" and d.phase == "confirm"
    assert [p["c"] for p in d.probes] == ["d", "b", "a"] and d.runs == [1, 1, 1]


def test_confirm_round_prefers_more_runs_at_an_equal_mean():
    # Round 1 re-ran a, b and c (first values 0.75 > d's 0.5); their means fell to 0.5, d's mean.
    # Round 2 ranks a, b, c (two runs each) above d (one run, seen first) and re-runs them.
    rows = [("d", 0, 0.5), ("a", 0, 0.75), ("b", 0, 0.75), ("c", 0, 0.75),
            ("a", 1, 0.25), ("b", 1, 0.25), ("c", 1, 0.25)]
    d = CoordinateDescent(DIMS, budget=10).confirm(results(*rows))
    assert d.action == "probe" and [p["c"] for p in d.probes] == ["a", "b", "c"] and d.runs == [2, 2, 2]
    assert d.best == {"c": "a"} and d.best_runs == 2  # the decision's pick: the same rule


# A lucky single run: "a" ran once at 0.9; "b" and "c" were re-run and hold means of 0.8 and 0.7.
LUCKY = [("a", 0, 0.9), ("b", 0, 0.85), ("b", 1, 0.75), ("c", 0, 0.7), ("c", 1, 0.7)]


def test_a_lucky_single_run_is_never_picked_over_a_confirmed_point():
    chosen = pick(study_of(*LUCKY))
    assert chosen.params == {"c": "b"} and chosen.runs == 2 and chosen.value == pytest.approx(0.8)
    decision = CoordinateDescent(DIMS, budget=len(LUCKY)).confirm(results(*LUCKY))
    assert decision.best == {"c": "b"} and decision.best_runs == 2  # the engine picks by the same rule
    assert trajectory(study_of(*LUCKY))[-1]["best_runs"] == 2


def test_confirmed_points_tie_by_more_runs_and_single_runs_count_only_without_any():
    # b (3 runs) and c (2 runs) share the mean 0.6: more runs wins; a's single 0.9 is not ranked.
    rows = [("a", 0, 0.9), ("c", 0, 0.5), ("c", 1, 0.7), ("b", 0, 0.6), ("b", 1, 0.6), ("b", 2, 0.6)]
    assert pick(study_of(*rows)).params == {"c": "b"}
    # No point re-run (a search without a confirm phase): the best single run, ties to the first seen.
    assert pick(study_of(("b", 0, 0.5), ("a", 0, 0.5), ("c", 0, 0.25))).params == {"c": "b"}
