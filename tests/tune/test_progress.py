"""The tune bar: runs that ended (not lost or retried trials), this call's rate, Optuna kept quiet."""

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pmlbal.tune.optuna import FAILED_FOR_GOOD, LOST, RUN
from pmlbal.tune.progress import progress_bar, update_bar

DIST = {"balance": FloatDistribution(0.25, 4.0, log=True)}


def _add(study, balance, state, run=0, **attrs):
    study.add_trial(create_trial(params={"balance": balance}, distributions=DIST, state=state,
                                 value=0.5 if state == TrialState.COMPLETE else None,
                                 user_attrs={RUN: run, **attrs}))


def test_the_bar_counts_runs_that_ended_and_starts_its_rate_at_a_resume():
    study = optuna.create_study(direction="maximize")
    _add(study, 1.0, TrialState.COMPLETE)
    _add(study, 2.0, TrialState.FAIL, error=f"{LOST}: worker 123 stopped")  # lost: to be run again
    bar, _ = progress_bar("s", budget=10)
    try:
        update_bar(bar, study)
        assert (bar.initial, bar.n) == (1, 1)  # before this call: not part of its rate
        _add(study, 2.0, TrialState.FAIL, error="diverged", **{FAILED_FOR_GOOD: True})
        _add(study, 4.0, TrialState.FAIL, error="raised once")  # retried: not a run done yet
        _add(study, 0.5, TrialState.PRUNED)
        _add(study, 1.0, TrialState.COMPLETE, run=1)
        update_bar(bar, study)
        assert bar.n == 4 and bar.initial == 1
    finally:
        bar.close()


def test_optuna_logs_warnings_only_while_the_bar_is_open():
    optuna.logging.set_verbosity(optuna.logging.INFO)
    bar, _ = progress_bar("s", budget=2)
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    bar.close()
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
