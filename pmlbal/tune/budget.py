"""How a study's budget is counted: in runs, (point, run index) pairs, and how much of it a
sampler proposes itself. The one place the CLI, the search loop and the workers ask."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from optuna.trial import FrozenTrial

from .model import StudySpec
from .trials import table_of_trials


def trial_budget(runs: int, folds: int = 1) -> int:
    """Trials a budget of `runs` training runs buys when each trial trains `folds` validation folds."""
    if runs < folds:
        raise ValueError(f"a budget of {runs} runs cannot train one trial on {folds} validation folds: "
                         f"give --budget {folds} or more")
    return runs // folds


def spec_folds(attrs: Mapping[str, Any] | None) -> int:
    """The validation folds a trial of the study whose stored description is `attrs` trains (one run
    each); 1 for a study without one."""
    return StudySpec.from_attrs(attrs).folds if attrs else 1


def spec_trials(spec: StudySpec) -> int:
    """Trials a study's budget buys: its `budget` (training runs) over its base's validation folds."""
    return trial_budget(spec.budget, spec.folds)


def sampling_budget(budget: int, confirm: bool, search: str = "tpe") -> int:
    """Trials a sampler proposes itself. cd's engine plans every one of its `budget` trials; tpe and
    random with `confirm` leave the last budget // 4 to re-runs of their top 3 points."""
    if search == "cd":
        return budget
    return budget - budget // 4 if confirm and budget >= 4 else budget


def runs_spent(trials: Iterable[FrozenTrial]) -> int:
    """Runs the `trials` started (the trial table's count): a run that raised and was retried, or was
    lost with its worker and run again, is one run, not two."""
    return table_of_trials(list(trials)).spent


def runs_ended(trials: Iterable[FrozenTrial]) -> int:
    """Runs of `trials` that ended: with a value, or failed for good (a run to be retried has not)."""
    return table_of_trials(list(trials)).ended
