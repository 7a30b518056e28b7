"""The search's settings and its plan (docs/tuner.md): what the phases read, in one frozen object.

`SearchPlan` holds the coordinates, the defaults `x0`, the budget, the acceptance threshold `tol`, the
coordinate order and couplings, the seed, the retries and the noise floor of the pick; from them it
derives the phase sizes, the explore phase's Sobol points and the descend phase's random restarts,
each a function of the settings alone, so every process that replays a search plans the same one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .dims import Dim, sobol_points

#: Version of the search (docs/tuner.md, "Versions"): a study made by another version is not resumed.
#: 3: the defaults are the first point and the pick's reference; Sobol points from scipy.
SEARCH_VERSION = 3


@dataclass(frozen=True)
class SearchPlan:
    """Maximise a noisy f over `dims` with a budget of `budget` runs (None: one descent, version 1).

    `x0`: the defaults, the search's first point (default: each range's centre). `tol`: a probe must beat
    the current point by more than this to move the descent. `order`: the coordinates' order in a sweep.
    `coupled`: coordinate -> (other, ratio): a step of the first by s (scale units) also moves the
    other by ratio * s, to walk along a ridge (e.g. temperature with balance); the other keeps its own
    moves. `retries`: times a run that raised is asked for again before it fails for good. `noise`: the
    s.d. of a paired difference of two runs, the floor of the pick's standard error.
    """

    dims: tuple[Dim, ...]
    x0: Mapping[str, Any] = field(default_factory=dict)
    tol: float = 0.0
    budget: int | None = None
    order: tuple[str, ...] = ()
    coupled: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    seed: int = 0
    retries: int = 1
    noise: float = 0.0

    @classmethod
    def make(cls, dims: Sequence[Dim], x0: Mapping[str, Any] | None = None, tol: float = 0.0,
             budget: int | None = None, order: Sequence[str] | None = None, seed: int = 0, retries: int = 1,
             coupled: Mapping[str, tuple[str, float]] | None = None, noise: float = 0.0) -> "SearchPlan":
        """A validated plan: x0 completed with the ranges' centres and snapped onto the box."""
        if not dims:
            raise ValueError("the search space is empty")
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate coordinate names in {names}")
        order = list(order) if order is not None else names
        if sorted(order) != sorted(names):
            raise ValueError(f"order {order} must list each coordinate once: {names}")
        by_name = {d.name: d for d in dims}
        start = {d.name: d.centre() for d in dims}
        for k, v in (x0 or {}).items():
            if k not in by_name:
                raise ValueError(f"x0 names an unknown coordinate {k!r}")
            d = by_name[k]
            if d.scale == "categorical" and v not in d.choices:
                raise ValueError(f"x0[{k!r}] = {v!r} is not one of {d.choices}")
            start[k] = d.keep(v)
        for k, (other, ratio) in (coupled or {}).items():
            if k not in by_name or other not in by_name or k == other:
                raise ValueError(f"coupled: {k!r} -> {other!r} must name two different coordinates of {names}")
            if by_name[k].scale == "categorical" or by_name[other].scale == "categorical":
                raise ValueError(f"coupled: {k!r} and {other!r} must be ordered coordinates")
            if not float(ratio) > 0:
                raise ValueError(f"coupled: the ratio of {k!r} -> {other!r} must be > 0, got {ratio}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if not tol >= 0:  # a negative tolerance lets two points beat each other in turn, forever
            raise ValueError(f"tol must be >= 0, got {tol}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        return cls(tuple(dims), start, float(tol), budget, tuple(order), dict(coupled or {}), int(seed), int(retries),
                   float(noise))

    @functools.cached_property
    def by_name(self) -> dict[str, Dim]:
        return {d.name: d for d in self.dims}

    @property
    def explore_size(self) -> int:
        """R = budget // 4 (0 without a budget or when budget < 4): the explore phase's points, and the
        confirm phase's re-runs."""
        return self.budget // 4 if self.budget is not None and self.budget >= 4 else 0

    @property
    def descend_budget(self) -> int | None:
        """First runs phases 1 and 2 may start: the defaults' included, the confirm phase's R excluded."""
        return None if self.budget is None else self.budget - self.explore_size

    def explore_points(self) -> list[dict[str, Any]]:
        """Phase 1: R distinct scrambled-Sobol points of the box (seeded)."""
        if not self.explore_size:
            return []
        return [dict(p) for p in sobol_points(self.dims, self.explore_size, self.seed)]

    def restart_point(self, k: int) -> dict[str, Any]:
        """The k-th uniform random start of phase 2: a function of (seed, k) only."""
        u = np.random.default_rng([self.seed, 2, k]).random(len(self.dims))
        return {d.name: d.from_uniform(ui) for d, ui in zip(self.dims, u)}

    def moves(self, x: Mapping[str, Any], name: str, step: float) -> list[tuple[int, dict[str, Any]]]:
        """(direction, point) one step of coordinate `name` up and one down from `x` (a coupled
        coordinate carries its partner along), within the box, excluding `x` itself."""
        dim = self.by_name[name]
        out = []
        for direction, y in dim.neighbours(x[name], step):
            p = {**x, name: y}
            if name in self.coupled:
                other, ratio = self.coupled[name]
                moved = dim.to_unit(y) - dim.to_unit(x[name])
                od = self.by_name[other]
                p[other] = od.from_unit(od.to_unit(x[other]) + ratio * moved)
            out.append((direction, p))
        return out
