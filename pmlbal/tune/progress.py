"""The tune command's progress bar: runs spent of the budget, and the current pick."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optuna

from .budget import runs_spent
from .optuna import pick


def runs_text(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def progress_bar(name: str, budget: int) -> tuple[Any, Callable[[str], None]]:
    """A tqdm bar over `budget` runs and a log function that prints above it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=budget, desc=f"tune {name}", unit="trial")
    return bar, bar.write


def update_bar(bar: Any, study: optuna.Study) -> None:
    """Show the runs spent and the pick; redraw on change only (the coordinator polls every second)."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    spent = runs_spent(finished)
    state = (spent, len(trials))
    if getattr(bar, "_pmlbal_state", None) == state:
        return
    bar._pmlbal_state = state
    bar.n = min(spent, bar.total)
    best = pick(study)
    if best is not None:
        bar.set_postfix_str(f"pick {best.value:.4f} ({runs_text(best.runs)}) at {format_params(best.params)}; "
                            f"running {len(trials) - len(finished)}")
    bar.refresh()
