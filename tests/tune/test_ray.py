"""The Ray Tune searcher and `pmlbal tune --engine ray`: the same search as the core, driven by Ray
(skipped without ray)."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray", reason="Ray Tune is optional: pip install 'pmlbal[ray]'")
tune = pytest.importorskip("ray.tune")

from pmlbal.cli import main  # noqa: E402
from pmlbal.tune import CoordinateDescent, Dim, open_storage, pick, point_key, search_space  # noqa: E402
from pmlbal.tune.optuna import decide_from_trials  # noqa: E402
from pmlbal.tune.ray import CoordinateDescentSearcher  # noqa: E402
from pmlbal.tune.ray_engine import ATTRS, record_trial  # noqa: E402
from pmlbal.tune.spec import load_spec  # noqa: E402
from pmlbal.tune.trials import FAILED_FOR_GOOD  # noqa: E402
from tests.helpers import serial_search  # noqa: E402

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


def test_searcher_warm_start_and_failures_for_good():
    """Trials told with `add_evaluated_point` (a resumed study) count as the searcher's own; a result
    holding FAILED_FOR_GOOD (a diverged run) fails its point at once, with no retry."""
    s = CoordinateDescentSearcher(DIMS, metric="score", mode="max")
    first = s.suggest("t0")
    s.on_trial_complete("t0", {"score": value(first)})
    up, down = s.suggest("t1"), s.suggest("t2")
    s.on_trial_complete("t1", {"score": float("nan"), FAILED_FOR_GOOD: "diverged"})
    s.on_trial_complete("t2", {"score": value(down)})
    nxt = s.suggest("t3")
    assert nxt not in (None, s.FINISHED, up)  # not retried: the next probe
    warm = CoordinateDescentSearcher(DIMS, metric="score", mode="max")
    warm.add_evaluated_point(first, value(first))
    warm.add_evaluated_point(up, None, pruned=True)
    warm.add_evaluated_point(down, value(down))
    assert warm.suggest("w0") == nxt
    raised = CoordinateDescentSearcher(DIMS, metric="score", mode="max")
    raised.add_evaluated_point(first, value(first))
    raised.add_evaluated_point(up, None, error=True)  # raised once: asked for again
    raised.add_evaluated_point(down, value(down))
    assert raised.suggest("w0") == up


def test_a_ray_trial_is_recorded_as_the_optuna_engine_stores_it():
    dims = search_space("BalancedNTXentLoss", "digits", {"balance": (0.5, 2.0)})
    study = optuna.create_study(direction="maximize")
    point = {d.name: d.centre() for d in dims}
    attrs = {"run_id": "a", "fold_run_ids": ["a"], "fold_values": [0.5], "fold_spread": 0.0, "val_gain": 0.1}
    ok = record_trial(study, dims, "map_at_r", {**point, "run": 1}, {"map_at_r": 0.5, ATTRS: json.dumps(attrs)}, None)
    assert ok.state.name == "COMPLETE" and ok.value == 0.5 and ok.params == point
    assert ok.user_attrs == {"run": 1, **attrs}
    other = {**point, "balance": 0.5}  # a failed run fails its point: the failures are another point's
    raised = record_trial(study, dims, "map_at_r", other, None, "ValueError: boom")
    assert raised.state.name == "FAIL" and raised.user_attrs == {"run": 0, "error": "ValueError: boom"}
    diverged = record_trial(study, dims, "map_at_r", other, {"map_at_r": float("nan"), FAILED_FOR_GOOD: "loss is nan",
                                                              "error": "DivergedError: loss is nan"}, None)
    assert diverged.state.name == "FAIL" and diverged.user_attrs[FAILED_FOR_GOOD] == "loss is nan"
    silent = record_trial(study, dims, "map_at_r", {**other, "run": 1}, {"other": 1.0}, None)
    assert silent.state.name == "FAIL" and "reported no map_at_r" in silent.user_attrs["error"]
    nan = record_trial(study, dims, "map_at_r", {**other, "run": 2}, {"map_at_r": float("nan")}, None)
    assert nan.state.name == "FAIL" and nan.value is None  # a NaN result is no result, never COMPLETE
    assert pick(study).params == point and pick(study).runs == 1


@pytest.fixture
def local_ray():
    """A local Ray of 2 CPUs that `pmlbal tune --engine ray` joins (it uses an initialised Ray)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _records(folder):
    return {r["run_id"]: r for r in (json.loads(p.read_text()) for p in (folder / "runs").glob("*.json"))}


def _runs(study):
    return sorted((tuple(sorted(t.params.items())), t.user_attrs["run"]) for t in study.trials)


@pytest.mark.slow
def test_cli_tune_engine_ray_records_resumes_and_picks_as_the_optuna_engine(tmp_path, local_ray):
    """`pmlbal tune --engine ray` on digits: 4 recorded runs, the study holds them as trials, its pick is
    the one cd's table gives; an identical rerun, a rerun of a study cut short and the Optuna engine on
    the same records train nothing new and pick the same."""
    url = f"sqlite:///{tmp_path}/tuning.db"
    common = ["--dataset", "digits", "--epochs", "1", "--val-folds", "1", "--space", "balance=0.5:2", "--budget", "4",
              "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    args = ["tune", "--engine", "ray", "--study", "r"] + common
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    study = optuna.load_study(study_name="r", storage=open_storage(url))
    records = _records(tmp_path)
    val = {i: r for i, r in records.items() if r["config"]["eval_split"] == "val"}
    assert len(val) == 4 and len(study.trials) == 4 and {t.state.name for t in study.trials} == {"COMPLETE"}
    assert {t.user_attrs["run_id"] for t in study.trials} == set(val)
    rerun = [t for t in study.trials if t.user_attrs["run"] == 1]
    assert len(rerun) == 1 and val[rerun[0].user_attrs["run_id"]]["seed"] == 1  # run k: seed base + k
    best, spec = pick(study), load_spec(study)
    cd = CoordinateDescent(spec.dims, x0=spec.x0, tol=spec.tol, budget=4, seed=spec.seed, noise=spec.noise)
    table = decide_from_trials(cd, study.trials, study.direction)
    assert table.action == "done" and table.best == best.params and table.best_runs == best.runs
    final = [r for r in records.values() if r["config"]["eval_split"] == "test"]
    assert len(final) == 1 and final[0]["config"]["tuned_from"] == f"{url}#r" and "the pick on test:" in first.output
    bench = CliRunner().invoke(main, ["bench", "--losses", "BalancedNTXentLoss", "--config", "tuned", "--storage", url,
                                      "--study", "r", "--dataset", "digits", "--epochs", "1", "--results-dir",
                                      str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    assert bench.exit_code == 0 and "recorded already" in bench.output, bench.output

    again = CliRunner().invoke(main, args)  # resumes: every trial is in the study, every run recorded
    assert again.exit_code == 0, again.output
    assert set(_records(tmp_path)) == set(records) and len(study.trials) == 4 and pick(study) == best

    cut = optuna.create_study(study_name="cut", storage=open_storage(url), direction="maximize")
    cut.set_user_attr("pmlbal:spec", spec.to_attrs())
    for t in study.trials[:2]:  # a run interrupted after two trials
        cut.add_trial(t)
    resumed = CliRunner().invoke(main, ["tune", "--engine", "ray", "--study", "cut", "--no-final"] + common)
    assert resumed.exit_code == 0, resumed.output
    assert set(_records(tmp_path)) == set(records) and _runs(cut) == _runs(study) and pick(cut) == pick(study)

    by_optuna = CliRunner().invoke(main, ["tune", "--study", "o", "--no-final"] + common)
    assert by_optuna.exit_code == 0, by_optuna.output
    other = optuna.load_study(study_name="o", storage=open_storage(url))
    assert set(_records(tmp_path)) == set(records) and _runs(other) == _runs(study)
    assert pick(other).params == best.params and pick(other).value == best.value

    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "r", "--results-dir",
                                      str(tmp_path)])
    assert shown.exit_code == 0 and "pick so far" in shown.output, shown.output


@pytest.mark.slow
@pytest.mark.parametrize("search", ["tpe", "gp"])
def test_ray_engine_samples_confirms_and_resumes_a_cut_study_without_sampling_it_again(tmp_path, local_ray, search):
    """Optuna's samplers through Ray, with the confirm phase: the defaults first, the sampled share, then
    re-runs; a study cut after two trials resumes to the same budget without re-running the defaults or
    sampling its whole budget again."""
    url = f"sqlite:///{tmp_path}/tuning.db"
    common = ["--engine", "ray", "--search", search, "--confirm", "--no-final", "--dataset", "digits", "--epochs",
              "1", "--val-folds", "1", "--space", "balance=0.5:2", "--budget", "4", "--results-dir", str(tmp_path),
              "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(main, ["tune", "--study", "w"] + common)
    assert first.exit_code == 0, first.output
    study = optuna.load_study(study_name="w", storage=open_storage(url))
    spec = study.user_attrs["pmlbal:spec"]  # as stored
    assert len(study.trials) == 4 and study.trials[0].params == spec["x0"]  # the defaults first
    assert [t.user_attrs["run"] for t in study.trials][-1] >= 1  # the last quarter re-runs a top point
    cut = optuna.create_study(study_name="cut", storage=open_storage(url), direction="maximize")
    cut.set_user_attr("pmlbal:spec", spec)
    for t in study.trials[:2]:
        cut.add_trial(t)
    resumed = CliRunner().invoke(main, ["tune", "--study", "cut"] + common)
    assert resumed.exit_code == 0, resumed.output
    assert len(cut.trials) == 4  # not 2 + 4: only what the budget had left
    assert sum(t.params == spec["x0"] and t.user_attrs["run"] == 0 for t in cut.trials) == 1  # defaults not re-run


def test_cli_tune_engine_ray_fails_in_one_line_when_ray_cannot_start(tmp_path, monkeypatch):
    common = ["tune", "--engine", "ray", "--dataset", "digits", "--budget", "1", "--val-folds", "1",
              "--results-dir", str(tmp_path)]
    refused = CliRunner().invoke(main, common + ["--address", "127.0.0.1:1"])  # nothing listens on port 1
    assert refused.exit_code == 1 and refused.output.strip().splitlines() == [
        "Error: cannot join the Ray cluster at 127.0.0.1:1: nothing answers there (Connection refused)"]
    bad = CliRunner().invoke(main, common + ["--address", "nowhere"])
    assert bad.exit_code == 1 and "expected auto, HOST:PORT or ray://HOST:PORT" in bad.output

    def broken(**kw):
        raise RuntimeError("no room for the object store\n(and more lines)")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", broken)
    failed = CliRunner().invoke(main, common)
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert failed.output.strip().splitlines()[-1] == "Error: cannot start a local Ray: no room for the object store"
    assert not optuna.get_all_study_summaries(open_storage(f"sqlite:///{tmp_path}/tuning.db"))  # nothing left behind
