"""The Ray Tune searcher: the same search as the core, driven by Ray (skipped without ray)."""

from __future__ import annotations

import math

import pytest

ray = pytest.importorskip("ray", reason="Ray Tune is optional: pip install 'pmlbal[ray]'")
tune = pytest.importorskip("ray.tune")

from pmlbal.tune import Dim, point_key  # noqa: E402
from tests.helpers import serial_search  # noqa: E402
from pmlbal.tune.ray import CoordinateDescentSearcher  # noqa: E402

DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]


def value(p):
    return -(math.log2(p["balance"]) - 1.3) ** 2 - 2 * (math.log2(p["temperature"]) + 3.4) ** 2


def serial(budget=None):
    return serial_search(DIMS, value, budget)


def test_searcher_protocol_without_ray_running():
    s = CoordinateDescentSearcher(DIMS, metric="score", mode="max")
    first = s.suggest("t0")
    assert first == {"balance": 1.0, "temperature": 0.125, "run": 0}
    assert s.suggest("t1") is None  # barrier: the start point is still running
    s.on_trial_complete("t0", {"score": value(first)})
    up, down = s.suggest("t1"), s.suggest("t2")
    assert {up["balance"], down["balance"]} == {2.0, 0.5}
    s.on_trial_complete("t1", error=True)  # errors: retried once, then no improvement
    assert s.suggest("t3") == up
    s.on_trial_complete("t3", error=True)
    s.on_trial_complete("t2", {"score": value(down)})
    state = s.get_state()
    again = CoordinateDescentSearcher(DIMS, metric="score", mode="max")
    again.set_state(state)
    assert again.suggest("t4") == s.suggest("t4")


def test_searcher_with_a_budget_runs_version_two_with_reruns():
    s = CoordinateDescentSearcher(DIMS, metric="score", mode="max", budget=12, seed=0)
    configs = []
    while (c := s.suggest(f"t{len(configs)}")) not in (None, s.FINISHED):
        configs.append(c)
        s.on_trial_complete(f"t{len(configs) - 1}", {"score": value(c)})
    assert c == s.FINISHED and len(configs) == 12
    assert sum(c["run"] >= 1 for c in configs) == 3  # the confirm phase: 12 // 4 re-runs
    expected, final = serial(budget=12)
    assert {(point_key(c, DIMS), c["run"]) for c in configs} == expected
    assert s.best_config == final.best


@pytest.mark.slow
def test_ray_tune_completes_a_small_search(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        searcher = CoordinateDescentSearcher(DIMS, metric="score", mode="max", budget=7)
        tuner = tune.Tuner(  # a Ray trial costs seconds to start on 2 cores: a short search
            lambda config: {"score": value(config)},
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=50, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    points = [(point_key(r.config, DIMS), r.config["run"]) for r in results]
    expected, final = serial(budget=7)
    assert len(points) == len(set(points)) and set(points) == expected  # no repeat, the same search
    assert searcher.best_config == final.best
