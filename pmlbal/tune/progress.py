"""The tune command's progress bar: runs spent of the budget, and the current pick."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optuna

from .budget import runs_ended, spec_folds
from .optuna import SPEC, pick


def runs_text(n: int, folds: int = 1) -> str:
    """`n` trials of a point as the training runs they are: '2 runs', or with K validation folds a
    trial '1 trial of 3 fold runs' (runs are what the budget counts)."""
    if folds <= 1:
        return f"{n} run" if n == 1 else f"{n} runs"
    return f"{n} trial{'s' if n != 1 else ''} of {folds} fold runs{' each' if n != 1 else ''}"


def format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def progress_bar(name: str, budget: int) -> tuple[Any, Callable[[str], None]]:
    """A tqdm bar over `budget` runs and a log function that prints above it. While it is open,
    Optuna logs WARNING and above only: its INFO line per trial would break the bar (the bar and
    the log say the same); closing the bar restores the verbosity."""
    from tqdm.auto import tqdm

    bar = tqdm(total=budget, desc=f"tune {name}", unit="trial")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    close = bar.close

    def close_and_restore() -> None:
        close()
        optuna.logging.set_verbosity(verbosity)
    bar.close = close_and_restore
    return bar, bar.write


def update_bar(bar: Any, study: optuna.Study) -> None:
    """Show the runs completed and the pick; redraw on change only (the coordinator polls every
    second). Only runs that ended count: complete, pruned, or failed for good (diverged); a failure
    that is retried, or a trial lost with its worker, is no run done.
    The runs completed before the first update (a resumed study) are the bar's `initial`, so its
    rate and ETA are this call's."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    spent = runs_ended(finished)
    state = (spent, len(trials))
    if getattr(bar, "_pmlbal_state", None) == state:
        return
    if getattr(bar, "_pmlbal_state", None) is None:
        bar.initial = min(spent, bar.total)
    bar._pmlbal_state = state
    bar.n = min(spent, bar.total)
    best = pick(study)
    if best is not None:  # refresh=False: the one refresh below draws it (a log file got every update twice)
        folds = spec_folds(study.user_attrs.get(SPEC))
        bar.set_postfix_str(f"pick {best.value:.4f} ({runs_text(best.runs, folds)}"
                            f"{', the defaults' if best.is_default else ''}) "
                            f"at {format_params(best.params)}; running {len(trials) - len(finished)}", refresh=False)
    bar.refresh()

