"""The one place pmlbal reaches past Optuna's public API.

Workers, heartbeats and the sampler's bookkeeping need a few storage operations Optuna keeps
private: an attribute on a trial another process runs, a compare-and-set of a trial's state (the
same one Optuna's own ``ask`` uses to pop a queued trial), a trial's storage id, and the URL of an
SQLite file. Each function below names the internal it uses; `tests/tune/test_store.py` pins them
against the installed Optuna, so an Optuna upgrade that moves one fails there, in one place.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def storage(study: optuna.Study) -> BaseStorage:
    """The study's storage (``Study._storage``)."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """A trial's storage id (``_trial_id``), unique across studies, unlike its number."""
    return trial._trial_id


def get_trial(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> FrozenTrial:
    """The trial as stored now."""
    return storage(study).get_trial(trial_id(trial))


def set_trial_system_attr(study: optuna.Study, trial: FrozenTrial | optuna.Trial, key: str, value: Any) -> None:
    """Write a system attribute on a trial without building an `optuna.Trial` (which would call the
    sampler's ``before_trial`` again)."""
    storage(study).set_trial_system_attr(trial_id(trial), key, value)


def set_trial_user_attr(study: optuna.Study, trial: FrozenTrial | optuna.Trial, key: str, value: Any) -> None:
    storage(study).set_trial_user_attr(trial_id(trial), key, value)


def compare_and_set_state(study: optuna.Study, trial: FrozenTrial, state: TrialState) -> bool:
    """Move a trial to `state` if nobody else did first (False then): the storage's own
    compare-and-set, as Optuna's ``ask`` uses to pop a queued trial."""
    try:
        return storage(study).set_trial_state_values(trial_id(trial), state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def open_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """An `optuna.Trial` for a stored trial this process has claimed (to run the objective on)."""
    return optuna.Trial(study, trial_id(trial))


def sqlite_file(study: optuna.Study) -> str | None:
    """The database file of an SQLite storage (through ``_CachedStorage._backend.url``); None for
    any other storage and for in-memory SQLite."""
    backend = getattr(storage(study), "_backend", storage(study))
    url = getattr(backend, "url", "")
    if isinstance(url, str) and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return url[len("sqlite:///"):]
    return None
