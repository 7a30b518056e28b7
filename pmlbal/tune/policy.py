"""The search policy of the sampled searches (tpe, gp, random, grid), one pure function for every engine.

The defaults first; then the sampler proposes `sampling_budget` trials (all of the budget, or, with the
confirm phase, all but its last quarter); then rounds of confirm re-runs of the 3 best points by mean
and the defaults (`CoordinateDescent.confirm`, the rule cd ends with) until the budget's runs exist.
`next_step` reads only the study's trials, so a resumed study continues where it stopped, whichever
engine ran it: this process (`run.run_search`), `pmlbal tune-worker` processes under `run.supervise`,
or Ray Tune (`ray_engine`). cd plans every trial itself (`coordinate_descent`) and is not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from optuna.trial import FrozenTrial

from .budget import sampling_budget
from .coordinate_descent import CoordinateDescent
from .dims import Dim
from .trials import trials_as_results

#: What an engine does next: let its sampler propose `trials` more (after queueing `probes`: the defaults),
#: queue and run the `probes` (a confirm round), wait for trials not yet finished, or stop.
ACTIONS = ("sample", "confirm", "wait", "done")


@dataclass(frozen=True)
class Step:
    """One decision of the policy: `action` (one of `ACTIONS`), the trials it asks for, and the
    (point, run index) pairs to queue first."""

    action: str
    trials: int = 0
    probes: tuple[tuple[Mapping[str, Any], int], ...] = ()


def next_step(trials: Sequence[FrozenTrial], dims: Sequence[Dim], *, budget: int, search: str, confirm: bool,
              x0: Mapping[str, Any] | None = None, noise: float = 0.0, maximize: bool = True) -> Step:
    """The next step of a sampled search whose study holds `trials`, with a budget of `budget` trials.

    sample while fewer than `sampling_budget(budget, confirm, search)` trials finished (the defaults `x0`
    queued first when no trial exists; a grid has none); without `confirm`, wait for trials still queued
    or running (a retry of a failed one), then done; with it, once every trial finished, the next confirm
    round (`confirm_round`), done when it is empty."""
    finished = sum(t.state.is_finished() for t in trials)
    pending = len(trials) - finished
    sampled = sampling_budget(budget, confirm, search)
    if finished < sampled:
        first = ((dict(x0), 0),) if x0 is not None and search != "grid" and not trials else ()
        return Step("sample", sampled - finished, first)
    if pending:
        return Step("wait", pending)
    if not confirm:
        return Step("done")
    probes = confirm_round(trials, dims, budget, x0, noise, maximize)
    return Step("confirm", len(probes), tuple(probes)) if probes else Step("done")


def confirm_round(trials: Sequence[FrozenTrial], dims: Sequence[Dim], budget: int,
                  x0: Mapping[str, Any] | None = None, noise: float = 0.0,
                  maximize: bool = True) -> list[tuple[dict[str, Any], int]]:
    """The confirm phase (docs/tuner.md) for any study: the next round of (point, run index) re-runs of
    its 3 best points by mean and its defaults `x0` (when they ran), fewest runs first, until `budget`
    runs exist; empty when they do, or when no point has a value to confirm."""
    results, running = trials_as_results(list(trials), dims, maximize, in_box=False)
    decision = CoordinateDescent(dims, x0=x0, budget=budget, noise=noise).confirm(results, running)
    return list(zip(decision.probes, decision.runs)) if decision.action == "probe" else []
