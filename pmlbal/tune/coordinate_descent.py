"""Noise-aware coordinate descent (docs/tuner.md, search version 3) as a pure function of the finished trials.

The search is written as a deterministic procedure that asks for objective values. To decide what to
run next, `CoordinateDescent.ask(results, running)` replays the procedure against the trial table:
every value it needs that a trial holds is answered from there; the first values it needs that are
missing are the next probes. Nothing lives only in memory, so a killed search resumes without losing
a trial, and several workers share one search.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .dims import Dim
from .phases import confirm_rounds, fill, replay
from .plan import SearchPlan
from .trials import Decision, Result, TrialTable


class CoordinateDescent:
    """Maximise a noisy f over `dims` with a budget of `budget` training runs (docs/tuner.md).

    1. the defaults `x0` (default: each range's centre) and R = budget // 4 distinct scrambled-Sobol
       points (`seed`), all first runs of one training seed, so every comparison is paired;
    2. descend: from those points, best first (the defaults first on a tie), then seeded uniform random
       points, run the coordinate descent of `phases.descend` until budget - R runs are spent; no point
       runs twice here. A move needs a probe better than the current point by more than `tol`;
    3. confirm: until `budget` runs are spent, re-run (new run index, new seeds) the one of the
       `TOP_POINTS` best points by mean and the defaults that has the fewest runs.
    The pick (`Decision.best`) is the best confirmed point if it beats the defaults on paired runs by
    more than the standard error of the difference (never below ``noise / sqrt(pairs)``), else the
    defaults (`TrialTable.pick`).

    With R = 0 (budget < 4) phases 1 and 3 are reduced to the defaults and the descent starts there;
    with `budget=None` the search is one descent from `x0` that ends when it converges (version 1).
    A run that raised is asked for again (`retries` times) before it fails for good. `coupled` moves
    a coordinate's partner along with it (`SearchPlan`).
    """

    def __init__(self, dims: Sequence[Dim], x0: Mapping[str, Any] | None = None, tol: float = 0.0,
                 budget: int | None = None, order: Sequence[str] | None = None, seed: int = 0,
                 retries: int = 1, coupled: Mapping[str, tuple[str, float]] | None = None, noise: float = 0.0) -> None:
        self.plan = SearchPlan.make(dims, x0, tol, budget, order, seed, retries, coupled, noise)

    @property
    def dims(self) -> list[Dim]:
        return list(self.plan.dims)

    @property
    def by_name(self) -> dict[str, Dim]:
        return self.plan.by_name

    def table(self, results: Sequence[Result] = (), running=()) -> TrialTable:
        """The trial table of `results` and `running` as this search reads it (its x0, noise, retries)."""
        return TrialTable(self.plan.dims, self.plan.retries, results, running, self.plan.x0, self.plan.noise)

    def ask(self, results: Sequence[Result] = (), running: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], int]] = (),
            fill_in: bool = False) -> Decision:
        """Next decision from the finished trials (`Result`s, values to maximise) and the running
        ones (points, or (point, run index) pairs).

        `fill_in`: never answer "wait" or "done" while a re-run is possible: at a barrier (probes still
        running) or past the budget, propose the confirm choice's next re-run (phase "fill"). For a
        caller that must return a point (an Optuna sampler under ``n_jobs > 1``, ask-and-tell past
        the budget), so the trial re-measures a top point instead of repeating a probe.
        """
        plan, table = self.plan, self.table(results, running)
        decision = replay(plan, table)
        if decision is None:  # phases 1 and 2 are over: budget spent, box exhausted, or converged
            if plan.budget is None or plan.explore_size == 0:
                decision = table.decide("done" if not table.n_running else "wait", phase="descend")
            else:
                decision = confirm_rounds(plan, table)
        if fill_in and decision.action != "probe":
            more = fill(plan, table, 1)
            if more.action == "probe":
                return more
        return decision

    def confirm(self, results: Sequence[Result] = (), running=()) -> Decision:
        """Phase 3 alone, on any search's trials: its first runs (run 0) are phases 1-2, and re-runs
        fill `budget` runs by the confirm choice (for TPE or random search with ``--confirm``)."""
        if self.plan.budget is None:
            raise ValueError("the confirm phase needs a budget")
        return confirm_rounds(self.plan, self.table(results, running))
