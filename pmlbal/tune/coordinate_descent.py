"""Coordinate-descent search whose state is a pure function of the finished trials (SPEC section 5).

The search is written as a deterministic procedure that asks for objective values. To decide
what to run next, `CoordinateDescent.ask(history)` replays the procedure against the history of
trials: every value it needs that the history holds is answered from there; the first values it
needs that are missing are the next probes. Nothing lives only in memory, so a killed search
resumes without losing a trial, and several workers can take the probes of one coordinate at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

FAILED = float("-inf")  # a failed or pruned probe: never an improvement


@dataclass(frozen=True)
class Dim:
    """One coordinate. `scale`: "log" (factor steps), "log2-int" (powers of two), "linear", "int"
    (linear, whole numbers) or "categorical".

    Steps live in the scale's own units: log2 units for "log" and "log2-int" (1.0 = x2), value
    units for "linear", and one choice for "categorical".
    """

    name: str
    scale: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    step: float | None = None
    min_step: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in ("log", "log2-int", "linear", "int", "categorical"):
            raise ValueError(f"{self.name}: scale must be log, log2-int, linear, int or categorical, got {self.scale!r}")
        if self.scale == "categorical":
            if len(self.choices) < 1:
                raise ValueError(f"{self.name}: a categorical coordinate needs choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"{self.name}: needs low <= high, got {self.low}, {self.high}")
        if self.scale in ("log", "log2-int") and self.low <= 0:
            raise ValueError(f"{self.name}: a {self.scale} coordinate needs low > 0, got {self.low}")
        if self.scale == "log2-int" and (int(self.low) != self.low or int(self.high) != self.high):
            raise ValueError(f"{self.name}: log2-int bounds must be integers")

    # -- the scale's own units ------------------------------------------------
    def to_unit(self, x: Any) -> float:
        if self.scale in ("log", "log2-int"):
            return math.log2(x)
        return float(x)

    def from_unit(self, u: float) -> Any:
        if self.scale == "log2-int":
            lo, hi = math.ceil(math.log2(self.low) - 1e-9), math.floor(math.log2(self.high) + 1e-9)
            return int(2 ** min(max(round(u), lo), hi))
        if self.scale == "int":
            return int(min(max(round(u), self.low), self.high))
        x = 2.0**u if self.scale == "log" else u
        return float(min(max(x, self.low), self.high))

    def default_step(self) -> float:
        if self.scale == "categorical":
            return 1.0  # every other choice is probed; the step is not used
        if self.step is not None:
            return float(self.step)
        if self.scale in ("log", "log2-int"):
            return 1.0
        if self.scale == "int":
            return max(1.0, round((self.high - self.low) / 8.0))
        return (self.high - self.low) / 8.0

    def default_min_step(self) -> float:
        if self.scale == "categorical":
            return 1.0
        if self.min_step is not None:
            return float(self.min_step)
        if self.scale in ("log2-int", "int"):
            return 1.0
        if self.scale == "log":
            return 0.25
        return (self.high - self.low) / 64.0

    def centre(self) -> Any:
        if self.scale == "categorical":
            return self.choices[0]
        if self.scale in ("linear", "int"):
            return self.from_unit((self.low + self.high) / 2.0)
        return self.from_unit((math.log2(self.low) + math.log2(self.high)) / 2.0)

    def neighbours(self, x: Any, step: float) -> list[tuple[int, Any]]:
        """(direction, point) one step up and one down, within bounds, excluding x itself."""
        if self.scale == "categorical":
            i = self.choices.index(x)
            return [(+1, c) for j, c in enumerate(self.choices) if j != i]
        out = []
        for d in (+1, -1):
            y = self.from_unit(self.to_unit(x) + d * step)
            if key_value(y) != key_value(x):
                out.append((d, y))
        return out


def key_value(v: Any) -> Any:
    return round(float(v), 12) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def point_key(point: Mapping[str, Any], dims: Sequence[Dim]) -> tuple:
    return tuple(key_value(point[d.name]) for d in dims)


@dataclass
class Decision:
    """What to do next: run `probes`, `wait` for the running ones, or `done`; with the best so far."""

    action: str
    probes: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_value: float | None = None


class _Need(Exception):
    def __init__(self, points):
        self.points = points


class CoordinateDescent:
    """Maximise f over `dims` by coordinate descent with step halving (SPEC section 5).

    Per sweep, each coordinate in `order` is probed one step up and one step down (both at
    once, so workers can run them in parallel); if the best probe beats f(x) by more than `tol`
    the search moves there and keeps stepping that way while it improves, otherwise that
    coordinate's step is halved (not below its minimum). It stops when a sweep moves nothing
    with every step at its minimum, or when `budget` distinct points have been evaluated.
    """

    def __init__(self, dims: Sequence[Dim], x0: Mapping[str, Any] | None = None, tol: float = 0.0,
                 budget: int | None = None, order: Sequence[str] | None = None) -> None:
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
            self.x0[k] = v if d.scale == "categorical" else d.from_unit(d.to_unit(v))
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.tol, self.budget = float(tol), budget

    # -- the procedure, written as if f were a function ------------------------
    def _procedure(self, f) -> Iterator[None]:
        x = dict(self.x0)
        fx = f([x])[0]
        steps = {d.name: d.default_step() for d in self.dims}
        mins = {d.name: d.default_min_step() for d in self.dims}
        while True:
            # Converged only once a whole sweep at minimum steps moved nothing.
            at_min = all(d.scale == "categorical" or steps[d.name] <= mins[d.name] for d in self.dims)
            moved = False
            for name in self.order:
                dim = self.by_name[name]
                cand = [(d, {**x, name: y}) for d, y in dim.neighbours(x[name], steps[name])]
                if not cand:
                    steps[name] = max(steps[name] / 2, mins[name])
                    continue
                vals = f([p for _, p in cand])
                i = max(range(len(cand)), key=lambda j: vals[j])
                if vals[i] > fx + self.tol:
                    direction, x, fx = cand[i][0], cand[i][1], vals[i]
                    moved = True
                    while dim.scale != "categorical":
                        nxt = [y for d, y in dim.neighbours(x[name], steps[name]) if d == direction]
                        if not nxt:
                            break
                        p = {**x, name: nxt[0]}
                        v = f([p])[0]
                        if v > fx + self.tol:
                            x, fx = p, v
                        else:
                            break
                elif dim.scale != "categorical":
                    steps[name] = max(steps[name] / 2, mins[name])
            if not moved and at_min:
                return
            yield  # a sweep ended; lets callers bound the work

    def ask(self, finished: Mapping[tuple, float], running: Sequence[Mapping[str, Any]] = ()) -> Decision:
        """Next decision from the finished trials (point_key -> value, FAILED for failures) and running points."""
        running_keys = {point_key(p, self.dims) for p in running}
        used = set()

        def f(points):
            missing, vals = [], []
            for p in points:
                k = point_key(p, self.dims)
                if k in finished:
                    used.add(k)
                    vals.append(finished[k])
                else:
                    missing.append(p)
            if missing:
                raise _Need(missing)
            return vals

        best_key = max(finished, key=lambda k: finished[k]) if finished else None
        best = dict(zip([d.name for d in self.dims], best_key)) if best_key is not None else None
        best_value = finished[best_key] if best_key is not None else None
        try:
            for _ in self._procedure(f):
                pass
        except _Need as need:
            todo = [p for p in need.points if point_key(p, self.dims) not in running_keys]
            if self.budget is not None:
                room = self.budget - len(finished) - len(running_keys)
                if room <= 0:
                    return Decision("done" if not running_keys else "wait", best=best, best_value=best_value)
                todo = todo[:room]
            if not todo:
                return Decision("wait", best=best, best_value=best_value)
            return Decision("probe", todo, best, best_value)
        return Decision("done", best=best, best_value=best_value)
