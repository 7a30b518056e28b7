"""The budget, counted in one place (pmlbal.tune.budget) for the CLI, the search loop and the workers."""

import optuna
from optuna.trial import TrialState

from pmlbal.tune.budget import runs_spent, sampling_budget


def test_sampling_budget_leaves_a_quarter_to_confirm_for_tpe_and_random_only():
    assert sampling_budget(16, confirm=True, search="tpe") == 12
    assert sampling_budget(16, confirm=True, search="random") == 12
    assert sampling_budget(16, confirm=False, search="tpe") == 16
    assert sampling_budget(3, confirm=True, search="tpe") == 3  # too small to confirm
    assert sampling_budget(16, confirm=False, search="cd") == 16  # cd's engine plans all of it


def test_a_retried_run_is_one_run():
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trial = lambda x, run, state: optuna.trial.create_trial(  # noqa: E731
        params={"x": x}, distributions=dist, value=0.5 if state == TrialState.COMPLETE else None, state=state,
        user_attrs={"run": run})
    trials = [trial(0.1, 0, TrialState.FAIL), trial(0.1, 0, TrialState.COMPLETE), trial(0.1, 1, TrialState.COMPLETE),
              trial(0.2, 0, TrialState.COMPLETE)]
    assert runs_spent(trials) == 3
