"""Noise-aware coordinate descent (SPEC section 5, version 2) as a pure function of the finished trials.

The search is written as a deterministic procedure that asks for objective values. To decide
what to run next, `CoordinateDescent.ask(results, running)` replays the procedure against the
trials so far: every value it needs that a trial holds is answered from there; the first values
it needs that are missing are the next probes. Nothing lives only in memory, so a killed search
resumes without losing a trial, and several workers share one search.

Version 2 spends a budget of B trials in three phases (R = B // 4):
explore (R scrambled-Sobol points), descend (version 1's coordinate descent from the best explored
point, then the next, then random points, never re-running a point), confirm (re-run the top 3
by mean with new seeds). The pick is the point with the highest mean of its runs among those re-run (`ranking.pick_best`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# The engine's parts: the dimensions (`dims.py`), the trials as the search reads them (`history.py`)
# and the phases (`phases.py`). Their public names are also importable from here, where the rest
# of the tuner and its users have always found them.
from .dims import SCALES, Dim, key_value, point_key, sobol_points
from .history import FAILED, Decision, History, Result
from .phases import confirm_extra, confirm_rounds, replay

__all__ = ["FAILED", "SCALES", "CoordinateDescent", "Decision", "Dim", "Result", "key_value", "point_key",
           "sobol_points"]


class CoordinateDescent:
    """Maximise a noisy f over `dims` with a budget of `budget` trials (SPEC section 5, version 2).

    1. explore: R = budget // 4 distinct scrambled-Sobol points (Optuna's QMCSampler, `seed`).
    2. descend: from the explored points, best first, then seeded uniform random points, run the
       coordinate descent below until budget - R trials are spent; no point runs twice here.
    3. confirm: until `budget` trials are spent, re-run (new run index) the one of the 3 points with
       the highest mean that has the fewest runs.
    The pick (`Decision.best`) is the point with the highest mean of its runs among the confirmed ones.

    Descent (version 1): per sweep, each coordinate in `order` is probed one step up and one step
    down (both at once, so workers run them in parallel); if the best probe beats f(x) by more than
    `tol` the search moves there and keeps stepping that way while it improves, otherwise that
    coordinate's step is halved (not below its minimum). A descent ends when a sweep moves nothing
    with every step at its minimum. Phases 1 and 2 read a point's first run only.

    With R = 0 (budget < 4) phases 1 and 3 are skipped and the descent starts at `x0` (default:
    the centre of each range); with `budget=None` the search is one descent from `x0` that ends
    when it converges (version 1). A run that raised is asked for again (`retries` times) before it
    counts as FAILED.
    """

    def __init__(self, dims: Sequence[Dim], x0: Mapping[str, Any] | None = None, tol: float = 0.0,
                 budget: int | None = None, order: Sequence[str] | None = None, seed: int = 0,
                 retries: int = 1) -> None:
        if not dims:
            raise ValueError("the search space is empty")
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate coordinate names in {names}")
        self.dims = list(dims)
        self.by_name = {d.name: d for d in dims}
        self.order = list(order) if order is not None else names
        if sorted(self.order) != sorted(names):
            raise ValueError(f"order {self.order} must list each coordinate once: {names}")
        self.x0 = {d.name: d.centre() for d in dims}
        for k, v in (x0 or {}).items():
            if k not in self.by_name:
                raise ValueError(f"x0 names an unknown coordinate {k!r}")
            d = self.by_name[k]
            if d.scale == "categorical" and v not in d.choices:
                raise ValueError(f"x0[{k!r}] = {v!r} is not one of {d.choices}")
            self.x0[k] = d.snap(v)
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if not tol >= 0:  # a negative tolerance lets two points beat each other in turn, forever
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.tol, self.budget, self.seed, self.retries = float(tol), budget, int(seed), int(retries)

    # -- the plan ----------------------------------------------------------------------------
    @property
    def explore_size(self) -> int:
        """R = budget // 4 (0 without a budget or when budget < 4)."""
        return self.budget // 4 if self.budget is not None and self.budget >= 4 else 0

    def explore_points(self) -> list[dict[str, Any]]:
        return [dict(p) for p in sobol_points(tuple(self.dims), self.explore_size, self.seed)] if self.explore_size else []

    def restart_point(self, k: int) -> dict[str, Any]:
        """The k-th uniform random start of phase 2: a function of (seed, k) only."""
        u = np.random.default_rng([self.seed, 2, k]).random(len(self.dims))
        return {d.name: d.from_uniform(ui) for d, ui in zip(self.dims, u)}

    # -- replay ----------------------------------------------------------------------------------
    def ask(self, results: Sequence[Result] = (), running: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], int]] = (),
            fill: bool = False) -> Decision:
        """Next decision from the finished trials (`Result`s, values to maximise) and the running
        ones (points, or (point, run index) pairs).

        `fill`: never answer "wait" or "done" while a re-run is possible: at a barrier (probes still
        running) or past the budget, propose the confirm rule's next re-run (phase "extra"). For a
        caller that must return a point (an Optuna sampler under ``n_jobs > 1``, ask-and-tell past
        the budget), so the trial re-measures a top-3 point instead of repeating a probe.
        """
        h = History(self.dims, self.retries, results, running)
        decision = replay(self, h)
        if decision is None:  # phases 1 and 2 are over: budget spent, box exhausted, or converged
            if self.budget is None or self.explore_size == 0:
                decision = h.decide("done" if not h.n_running else "wait", phase="descend")
            else:
                decision = confirm_rounds(h, self.budget)
        if fill and decision.action != "probe":
            extra = confirm_extra(h, self.dims, 1, "extra")
            if extra.action == "probe":
                return extra
        return decision

    def confirm(self, results: Sequence[Result] = (), running=()) -> Decision:
        """Phase 3 alone, on any search's trials: its first runs (run 0) are phases 1-2, and re-runs
        fill `budget` trials by the confirm rule (for TPE or random search with ``--confirm``)."""
        if self.budget is None:
            raise ValueError("the confirm phase needs a budget")
        return confirm_rounds(History(self.dims, self.retries, results, running), self.budget)
