"""pmlbal.tune.store pinned against the installed Optuna: the only private API pmlbal uses."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from pmlbal.tune import store

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storages(tmp_path):
    yield "memory", None
    yield "sqlite", f"sqlite:///{tmp_path}/s.db"
    yield "journal", optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_store_operations_on_each_storage(tmp_path, kind):
    url = dict(storages(tmp_path))[kind]
    study = optuna.create_study(storage=url, study_name="s")
    study.enqueue_trial({"x": 1.0})
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    assert isinstance(store.trial_id(waiting), int)
    assert store.compare_and_set_state(study, waiting, TrialState.RUNNING)
    assert not store.compare_and_set_state(study, waiting, TrialState.RUNNING)  # somebody else took it
    store.set_trial_system_attr(study, waiting, "k", [1, "a"])
    store.set_trial_user_attr(study, waiting, "run", 2)
    again = store.get_trial(study, waiting)
    assert again.system_attrs["k"] == [1, "a"] and again.user_attrs["run"] == 2 and again.state == TrialState.RUNNING
    trial = store.open_trial(study, waiting)
    assert trial.number == waiting.number and trial.suggest_float("x", 0, 2) == 1.0  # its enqueued params
    study.tell(trial, 0.5)
    assert not store.compare_and_set_state(study, waiting, TrialState.FAIL)  # finished: no longer movable
    assert store.sqlite_file(study) == (f"{tmp_path}/s.db" if kind == "sqlite" else None)


def test_in_memory_sqlite_has_no_file():
    assert store.sqlite_file(optuna.create_study(storage="sqlite:///:memory:")) is None
