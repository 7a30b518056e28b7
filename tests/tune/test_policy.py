"""The sampled searches' policy (`policy.next_step`): one pure function every engine follows, checked on
hand-made trial lists, so a resumed study of any engine continues where it stopped."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pmlbal.tune.dims import Dim
from pmlbal.tune.policy import next_step
from pmlbal.tune.trials import RUN

DIMS = [Dim("balance", "log", 1 / 16, 16)]
X0 = {"balance": 1.0}
DIST = {"balance": FloatDistribution(1 / 16, 16, log=True)}


def trial(balance: float, value: float | None, state=TrialState.COMPLETE, run: int = 0):
    return create_trial(params={"balance": balance}, distributions=DIST, value=value if state == TrialState.COMPLETE
                        else None, state=state, user_attrs={RUN: run})


def step(trials, budget=8, search="tpe", confirm=True, x0=X0):
    return next_step(trials, DIMS, budget=budget, search=search, confirm=confirm, x0=x0)


def test_an_empty_study_samples_its_sampling_budget_with_the_defaults_queued_first():
    s = step([])
    assert (s.action, s.trials, s.probes) == ("sample", 6, ((X0, 0),))  # 8 - 8 // 4
    assert step([], confirm=False).trials == 8
    assert step([], search="grid", confirm=False).probes == ()  # a grid runs its own points


def test_a_resumed_study_samples_only_what_is_left_and_never_the_defaults_again():
    """The two mutants of issue 45: a resume that re-samples the whole budget, or re-runs the defaults."""
    done = [trial(1.0, 0.5), trial(2.0, 0.6), trial(4.0, 0.4)]
    s = step(done)
    assert (s.action, s.trials, s.probes) == ("sample", 3, ())


def test_confirm_waits_for_every_trial_then_rounds_until_the_budget_then_done():
    sampled = [trial(b, v) for b, v in [(1.0, 0.50), (2.0, 0.70), (4.0, 0.65), (8.0, 0.40), (0.5, 0.30), (0.25, 0.2)]]
    assert step([*sampled, trial(3.0, None, TrialState.RUNNING)]).action == "wait"
    assert step([*sampled, trial(3.0, None, TrialState.WAITING)]).action == "wait"
    s = step(sampled)
    assert s.action == "confirm" and 1 <= s.trials <= 2 and s.trials == len(s.probes)
    assert {p["balance"] for p, run in s.probes} <= {1.0, 2.0, 4.0} and all(run == 1 for _, run in s.probes)
    reruns = [trial(p["balance"], 0.6, run=run) for p, run in s.probes]
    assert step([*sampled, *reruns]).action == ("done" if len(reruns) == 2 else "confirm")


def test_without_confirm_a_queued_retry_runs_before_done():
    full = [trial(2.0 ** (k - 4), 0.5) for k in range(8)]
    assert step(full, confirm=False).action == "done"
    assert step([*full[:7], trial(1.0, None, TrialState.FAIL), trial(1.0, None, TrialState.WAITING)],
                confirm=False).action == "wait"


def test_a_study_whose_every_run_failed_has_nothing_to_confirm():
    failed = [trial(1.0, None, TrialState.FAIL) for _ in range(6)]
    assert step(failed).action == "done"


@pytest.mark.parametrize("engine_file", ["run.py", "ray_engine.py"])
def test_no_engine_keeps_its_own_copy_of_the_budget_arithmetic(engine_file):
    """The policy lives in one place: the engines ask it (issue 45)."""
    from pathlib import Path

    import pmlbal.tune

    text = (Path(pmlbal.tune.__file__).parent / engine_file).read_text()
    assert "sampling_budget" not in text and "next_step" in text


def test_the_local_engine_follows_the_policy_to_the_budget():
    from pmlbal.config import TrainConfig
    from pmlbal.tune.run import run_search
    from pmlbal.tune.spec import make_spec
    from pmlbal.tune.spaces import suggest

    calls = []

    def objective(t):
        calls.append(suggest(t, DIMS[0]))
        return -abs(calls[-1] - 2.0) + 0.001 * len(calls)

    spec = make_spec(TrainConfig(), "BalancedNTXentLoss", DIMS, "random", 8, confirm=True, x0=X0)
    study = run_search(objective, DIMS, "random", 8, optuna.storages.InMemoryStorage(), "s", seed=0, spec=spec,
                       confirm=True)
    assert calls[0] == 1.0 and len(calls) == 8
    assert step(study.get_trials(deepcopy=False)).action == "done"


def test_a_study_description_is_typed_and_round_trips_through_its_stored_json():
    """One study model (issue 45): a misspelt field is an AttributeError, not a silent None; what a study stores
    reads back equal; a stored description without the keys a study needs is refused by name."""
    from pmlbal.config import TrainConfig
    from pmlbal.tune.model import StudySpec
    from pmlbal.tune.spec import make_spec

    spec = make_spec(TrainConfig(val_folds=2), "BalancedNTXentLoss", DIMS, "tpe", 9, confirm=True, x0=X0, noise=0.01,
                     coupled={"balance": ("temperature", 0.5)})
    assert (spec.folds, spec.trials, spec.confirm) == (2, 4, True)
    assert StudySpec.from_attrs(spec.to_attrs()) == spec
    assert spec.cd_settings() == {"x0": X0, "tol": 0.0, "noise": 0.01, "coupled": {"balance": ("temperature", 0.5)}}
    with pytest.raises(AttributeError):
        spec.nosie  # noqa: B018
    with pytest.raises(ValueError, match="study 'x': its description lacks dims, base"):
        StudySpec.from_attrs({"loss": "L", "dataset": "d", "search": "cd", "budget": 1, "metric": "m"}, "study 'x'")
    old = {k: v for k, v in spec.to_attrs().items() if k not in ("tol", "noise", "coupled", "seed")}
    assert StudySpec.from_attrs(old).cd_settings() == {"x0": X0, "tol": 0.0, "noise": 0.0, "coupled": {}}
