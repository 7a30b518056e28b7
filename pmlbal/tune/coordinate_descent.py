"""Noise-aware coordinate descent (SPEC section 5, version 2) as a pure function of the finished trials.

The search is written as a deterministic procedure that asks for objective values. To decide
what to run next, `CoordinateDescent.ask(results, running)` replays the procedure against the
trials so far: every value it needs that a trial holds is answered from there; the first values
it needs that are missing are the next probes. Nothing lives only in memory, so a killed search
resumes without losing a trial, and several workers share one search.

Version 2 spends a budget of B trials in three phases (R = B // 4):
explore (R scrambled-Sobol points), descend (version 1's coordinate descent from the best explored
point, then the next, then random points, never re-running a point), confirm (re-run the top 3
by mean with new seeds). The pick is the point with the highest mean of its runs.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .ranking import ranked

FAILED = float("-inf")  # a failed or pruned run: never an improvement, never picked
SCALES = ("log", "log2-int", "log-int", "linear", "int", "categorical")
_IDLE_STARTS = 25  # consecutive restarts that find no new point: the box is exhausted


@dataclass(frozen=True)
class Dim:
    """One coordinate. `scale`: "log" (factor steps), "log2-int" (powers of two, e.g. batch size),
    "log-int" (whole numbers, factor steps), "linear", "int" or "categorical".

    Steps live in the scale's own units: log2 units for the log scales (1.0 = x2), value units for
    "linear" and "int", one choice for "categorical". `grid` is a lattice spacing for "linear" and
    "int" (Optuna's `step=`; 1 for "int" by default): every value is `low + k * grid` and every move
    is a whole number of grid steps.
    """

    name: str
    scale: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    step: float | None = None
    min_step: float | None = None
    grid: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"{self.name}: scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.scale == "categorical":
            if len(self.choices) < 1:
                raise ValueError(f"{self.name}: a categorical coordinate needs choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"{self.name}: needs low <= high, got {self.low}, {self.high}")
        if self.scale in ("log", "log2-int", "log-int") and self.low <= 0:
            raise ValueError(f"{self.name}: a {self.scale} coordinate needs low > 0, got {self.low}")
        if self.scale == "log2-int" and (int(self.low) != self.low or int(self.high) != self.high):
            raise ValueError(f"{self.name}: log2-int bounds must be integers")
        if self.scale == "log2-int" and math.floor(math.log2(self.high) + 1e-9) < math.ceil(math.log2(self.low) - 1e-9):
            raise ValueError(f"{self.name}: no power of two between {self.low} and {self.high}")
        if self.grid is not None:
            if self.scale not in ("linear", "int") or not self.grid > 0:
                raise ValueError(f"{self.name}: grid must be > 0 and is for linear or int coordinates, got {self.grid}")

    # -- values -------------------------------------------------------------------------------
    @property
    def _lattice(self) -> float | None:
        return self.grid if self.grid is not None else (1.0 if self.scale == "int" else None)

    def _kmax(self) -> int:
        return int(math.floor((self.high - self.low) / self._lattice + 1e-9))

    def _exponents(self) -> tuple[int, int]:
        return math.ceil(math.log2(self.low) - 1e-9), math.floor(math.log2(self.high) + 1e-9)

    def to_unit(self, x: Any) -> float:
        if self.scale in ("log", "log2-int", "log-int"):
            return math.log2(x)
        return float(x)

    def from_unit(self, u: float) -> Any:
        """The valid value nearest to `u` (scale units): clipped to the box, on the lattice, of the right type."""
        if self.scale == "log2-int":
            lo, hi = self._exponents()
            return int(2 ** min(max(round(u), lo), hi))
        if self.scale == "log-int":
            return int(min(max(round(2.0**u), math.ceil(self.low)), math.floor(self.high)))
        if self.scale == "log":
            return float(min(max(2.0**u, self.low), self.high))
        q = self._lattice
        if q is None:
            return float(min(max(u, self.low), self.high))
        k = min(max(round((u - self.low) / q), 0), self._kmax())
        return int(round(self.low + k * q)) if self.scale == "int" else float(round(self.low + k * q, 12))

    def snap(self, x: Any) -> Any:
        """`x` made valid (categorical values must already be a choice)."""
        if self.scale == "categorical":
            if x not in self.choices:
                raise ValueError(f"{self.name}: {x!r} is not one of {self.choices}")
            return x
        if self.scale == "log" or (self.scale == "linear" and self.grid is None):
            # Continuous: clip only. A round trip through log2 moves large values by an ulp.
            return float(min(max(float(x), self.low), self.high))
        return self.from_unit(self.to_unit(x))

    def contains(self, x: Any) -> bool:
        if self.scale == "categorical":
            return x in self.choices
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not self.low <= x <= self.high:
            return False
        return math.isclose(self.snap(x), x, rel_tol=1e-9, abs_tol=1e-12)

    def from_uniform(self, u: float) -> Any:
        """A value for u in [0, 1): uniform in the scale's own units (uniform choice, exponent, lattice index)."""
        u = min(max(float(u), 0.0), 1.0 - 1e-12)
        if self.scale == "categorical":
            return self.choices[int(u * len(self.choices))]
        if self.scale == "log2-int":
            lo, hi = self._exponents()
            return int(2 ** (lo + int(u * (hi - lo + 1))))
        if self.scale in ("log", "log-int"):
            return self.from_unit(math.log2(self.low) + u * (math.log2(self.high) - math.log2(self.low)))
        if self._lattice is not None:
            return self.from_unit(self.low + int(u * (self._kmax() + 1)) * self._lattice)
        return self.from_unit(self.low + u * (self.high - self.low))

    # -- steps --------------------------------------------------------------------------------
    def _on_lattice(self, step: float) -> float:
        q = self._lattice
        return step if q is None else max(q, math.floor(step / q + 1e-9) * q)

    def default_step(self) -> float:
        if self.scale == "categorical":
            return 1.0  # every other choice is probed; the step is not used
        if self.step is not None:
            return self._on_lattice(float(self.step))
        if self.scale in ("log", "log2-int", "log-int"):
            return 1.0
        return self._on_lattice((self.high - self.low) / 8.0) if self.high > self.low else self._lattice or 1.0

    def default_min_step(self) -> float:
        if self.scale == "categorical":
            return 1.0
        if self.min_step is not None:
            return self._on_lattice(float(self.min_step))
        if self.scale == "log2-int":
            return 1.0
        if self.scale in ("log", "log-int"):
            return 0.25
        if self._lattice is not None:
            return self._lattice
        return (self.high - self.low) / 64.0 if self.high > self.low else 1.0

    def halve(self, step: float, min_step: float) -> float:
        return max(self._on_lattice(step / 2.0), min_step)

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


@dataclass(frozen=True, eq=False)
class Result:
    """A finished trial as the search sees it: its point, run index (0 = first run of the point) and
    value (to maximise); `value=None` for a trial that raised (tried again up to `retries` times),
    `pruned=True` for a deliberate stop (never retried)."""

    point: Mapping[str, Any]
    run: int = 0
    value: float | None = None
    pruned: bool = False


@dataclass
class Decision:
    """What to do next: run `probes` (with their run indices `runs`), `wait` for running trials, or `done`.

    `best` is the pick so far (highest mean of a point's runs), `best_value` that mean and
    `best_runs` the number of runs behind it; `phase` is "explore", "descend" or "confirm".
    """

    action: str
    probes: list[dict[str, Any]] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    phase: str = ""
    best: dict[str, Any] | None = None
    best_value: float | None = None
    best_runs: int = 0
    spent: int = 0  # runs, (point, run index) pairs, finished or running: what the budget counts


class _Need(Exception):
    def __init__(self, points):
        self.points = points


@functools.lru_cache(maxsize=64)
def sobol_points(dims: tuple[Dim, ...], n: int, seed: int) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """Up to `n` distinct points of the box from Optuna's scrambled Sobol sequence (seeded), each
    coordinate mapped to its scale; fewer only when the box holds fewer distinct points."""
    import optuna
    from optuna.distributions import FloatDistribution

    unit = {f"u{i}": FloatDistribution(0.0, 1.0) for i in range(len(dims))}
    out, seen = [], set()
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        # QMCSampler is "experimental"; scipy notes Sobol balance is best at powers of two: we need n.
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per plan
        try:
            sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
            study = optuna.create_study(sampler=sampler)
        finally:
            optuna.logging.set_verbosity(verbosity)
        for _ in range(max(64 * n, 256)):
            if len(out) == n:
                break
            # QMCSampler.sample_relative reads only the study's QMC counter, never the trial.
            u = sampler.sample_relative(study, None, unit)
            point = tuple((d.name, d.from_uniform(u[f"u{i}"])) for i, d in enumerate(dims))
            key = tuple(key_value(v) for _, v in point)
            if key not in seen:
                seen.add(key)
                out.append(point)
    return tuple(out)


class CoordinateDescent:
    """Maximise a noisy f over `dims` with a budget of `budget` trials (SPEC section 5, version 2).

    1. explore: R = budget // 4 distinct scrambled-Sobol points (Optuna's QMCSampler, `seed`).
    2. descend: from the explored points, best first, then seeded uniform random points, run the
       coordinate descent below until budget - R trials are spent; no point runs twice here.
    3. confirm: until `budget` trials are spent, re-run (new run index) the one of the 3 points with
       the highest mean that has the fewest runs.
    The pick (`Decision.best`) is the point with the highest mean of its runs.

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

    # -- the procedure, written as if f (first-run values) were a function ----------------------
    def _descent(self, x: dict[str, Any], f) -> None:
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
                    steps[name] = dim.halve(steps[name], mins[name])
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
                    steps[name] = dim.halve(steps[name], mins[name])
            if not moved and at_min:
                return

    def _procedure(self, f, requested: set) -> None:
        """Phases 1 and 2; returns when the box is exhausted (or, without a budget, when converged).
        Running out of phase 2's budget surfaces as a `_Need` the caller cannot serve."""
        plan = self.explore_points()
        if plan:
            vals = f(plan)
            starts: Iterator[dict] = iter([p for _, _, p in sorted(zip(vals, range(len(plan)), plan),
                                                                key=lambda t: (-t[0], t[1]))])
        else:
            starts = iter([dict(self.x0)])
        idle = 0
        for start in itertools.chain(starts, (self.restart_point(k) for k in itertools.count())):
            before = len(requested)
            self._descent(dict(start), f)
            if self.budget is None:
                return
            idle = 0 if len(requested) > before else idle + 1
            if idle >= _IDLE_STARTS:
                return

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
        h = _History(self, results, running)
        requested: set = set()

        def f(points):
            missing, vals = [], []
            for p in points:
                k = point_key(p, self.dims)
                requested.add(k)
                v = h.first.get(k)
                if v is None:
                    missing.append(p)
                else:
                    vals.append(v)
            if missing:
                raise _Need(missing)
            return vals

        phase = "explore" if self.explore_size and len(h.first) < self.explore_size else "descend"
        decision = None
        try:
            self._procedure(f, requested)
        except _Need as need:
            decision = self._serve(h, need.points, phase)
        if decision is None:  # phases 1 and 2 are over: budget spent, box exhausted, or converged
            if self.budget is None or self.explore_size == 0:
                decision = h.decide("done" if not h.n_running else "wait", phase="descend")
            else:
                decision = self._rounds(h, self.budget)
        if fill and decision.action != "probe":
            extra = self._confirm(h, 1, "extra")
            if extra.action == "probe":
                return extra
        return decision

    def confirm(self, results: Sequence[Result] = (), running=()) -> Decision:
        """Phase 3 alone, on any search's trials: its first runs (run 0) are phases 1-2, and re-runs
        fill `budget` trials by the confirm rule (for TPE or random search with ``--confirm``)."""
        if self.budget is None:
            raise ValueError("the confirm phase needs a budget")
        return self._rounds(_History(self, results, running), self.budget)

    def _rounds(self, h: "_History", budget: int) -> Decision:
        """Phase 3 in rounds of up to 3 re-runs. A round is chosen from the runs known when it
        starts (first runs and earlier rounds), so its re-runs can run in parallel and a replay
        after a kill chooses exactly what the uninterrupted search chose."""
        spent = sum(1 for (k, run) in h.trial_count if run == 0)
        known = {k: {0: v} for k, v in h.first.items()}
        while True:
            room = budget - spent
            chosen: list[tuple[tuple, int]] = []
            for _ in range(max(0, min(room, 3))):
                top = ranked([k for k in known if _mean(known[k]) > FAILED], lambda k: _mean(known[k]),
                             lambda k: len(known[k]), h.seen)[:3]
                if not top:
                    break

                def count(k):
                    return len(known[k]) + sum(1 for c, _ in chosen if c == k)

                k = min(top, key=lambda k: (count(k), top.index(k)))
                chosen.append((k, count(k)))  # run index: the point's runs so far, counted in rounds
            if not chosen:
                return h.decide("wait" if h.n_running else "done", phase="confirm")
            missing = []
            for k, run in chosen:
                spent += 1 if (k, run) in h.trial_count else 0
                if run not in h.values.get(k, {}):
                    missing.append((k, run))
            if missing:
                todo = [(k, run) for k, run in missing if run not in h.pending.get(k, [])]
                new_room, kept = max(0, budget - h.n_trials), []
                for t in todo:  # retries (a run already tried) are free; new runs fill the budget
                    if t in h.trial_count or new_room > 0:
                        new_room -= t not in h.trial_count
                        kept.append(t)
                todo = kept
                if todo:
                    return h.decide("probe", [dict(h.points[k]) for k, _ in todo], [run for _, run in todo], "confirm")
                return h.decide("wait" if h.n_running else "done", phase="confirm")
            for k, run in chosen:
                known[k][run] = h.values[k][run]

    def _serve(self, h: "_History", points: list[dict], phase: str) -> Decision | None:
        """Probes for the first values the procedure misses; None when phase 2 has no budget left."""
        todo, new_keys = [], set()
        cap = None if self.budget is None else self.budget - self.explore_size
        room_new = None if cap is None else cap - len(h.first_tried)
        room_total = None if self.budget is None else self.budget - h.n_trials
        waiting = False
        for p in points:
            k = point_key(p, self.dims)
            if k in h.first_pending:
                waiting = True
                continue
            if k in new_keys:
                continue
            is_new = k not in h.first_tried
            if is_new and room_new is not None and len([1 for q in todo if q[2]]) >= room_new:
                continue
            todo.append((p, k, is_new))
            new_keys.add(k)
        if room_total is not None:  # retries of a run that raised are free; new runs fill the budget
            allowed = set(list(dict.fromkeys(k for _, k, new in todo if new))[:max(room_total, 0)])
            todo = [t for t in todo if not t[2] or t[1] in allowed]
        if todo:
            return h.decide("probe", [p for p, _, _ in todo], [0] * len(todo), phase)
        if waiting or (room_total is not None and room_total <= 0 and h.n_running):
            return h.decide("wait", phase=phase)
        if room_total is not None and room_total <= 0:
            return h.decide("done", phase="confirm")
        return None

    def _confirm(self, h: "_History", room: int, phase: str) -> Decision:
        """Phase 3: up to 3 re-runs, each of the top-3 point (by mean) with the fewest runs."""
        probes, runs = [], []
        extra: dict[tuple, list[int]] = {}
        for _ in range(max(0, min(room, 3))):
            pick = h.confirm_probe(extra)
            if pick is None:
                break
            point, run = pick
            extra.setdefault(point_key(point, self.dims), []).append(run)
            probes.append(point)
            runs.append(run)
        if probes:
            return h.decide("probe", probes, runs, phase)
        return h.decide("wait" if h.n_running else "done", phase=phase)


def _mean(runs: Mapping[int, float]) -> float:
    vals = list(runs.values())
    return FAILED if any(v == FAILED for v in vals) else float(np.mean(vals))


class _History:
    """The trials grouped per point: first-run values (phases 1-2) and all runs (phase 3, the pick)."""

    def __init__(self, cd: CoordinateDescent, results: Sequence[Result], running) -> None:
        self.cd = cd
        dims = cd.dims
        self.points: dict[tuple, dict[str, Any]] = {}
        values: dict[tuple, dict[int, float]] = {}
        failures: dict[tuple, dict[int, int]] = {}
        self.n_trials = 0
        self.trial_count: dict[tuple[tuple, int], int] = {}
        for r in results:
            self.n_trials += 1
            k = point_key(r.point, dims)
            self.trial_count[(k, r.run)] = self.trial_count.get((k, r.run), 0) + 1
            self.points.setdefault(k, {d.name: r.point[d.name] for d in dims})
            if r.pruned:
                failures.setdefault(k, {})[r.run] = cd.retries + 1
            elif r.value is None or math.isnan(float(r.value)):
                f = failures.setdefault(k, {})
                f[r.run] = f.get(r.run, 0) + 1
            else:
                values.setdefault(k, {})[r.run] = max(values.get(k, {}).get(r.run, -math.inf), float(r.value))
        self.pending: dict[tuple, list[int]] = {}
        for item in running:
            point, run = (item if isinstance(item, tuple) else (item, 0))
            k = point_key(point, dims)
            self.points.setdefault(k, {d.name: point[d.name] for d in dims})
            self.pending.setdefault(k, []).append(int(run))
            self.trial_count[(k, int(run))] = self.trial_count.get((k, int(run)), 0) + 1
            self.n_trials += 1
        # The budget counts runs, (point, run index) pairs: a retry of a run that raised is free.
        self.n_trials = len(self.trial_count)
        self.n_running = sum(len(v) for v in self.pending.values())
        self.pending_keys = set(self.pending)
        # A run that failed more than `retries` times (or was pruned) counts as FAILED.
        self.retryable: dict[tuple, list[int]] = {}
        for k, per_run in failures.items():
            for run, n in per_run.items():
                if run in values.get(k, {}):
                    continue
                if n > cd.retries:
                    values.setdefault(k, {})[run] = FAILED
                else:
                    self.retryable.setdefault(k, []).append(run)
        self.values = values
        self.failed_runs = {k: set(v) for k, v in failures.items()}
        self.first = {k: v[0] for k, v in values.items() if 0 in v}
        self.first_pending = {k for k, runs in self.pending.items() if 0 in runs}
        self.first_tried = set(self.first) | self.first_pending | {k for k, v in failures.items() if 0 in v}
        self._order = {k: i for i, k in enumerate(self.points)}

    def mean(self, k: tuple) -> float:
        return _mean(self.values[k])

    def seen(self, k: tuple) -> int:
        """The order point `k` was first seen in (its first trial)."""
        return self._order[k]

    def ranked(self) -> list[tuple]:
        """Points with at least one finished run, by the one ranking rule (`ranking.ranked`)."""
        keys = [k for k in self.values if self.values[k]]
        return ranked(keys, self.mean, lambda k: len(self.values[k]), self.seen)

    def confirm_probe(self, extra: Mapping[tuple, list[int]]) -> tuple[dict[str, Any], int] | None:
        top = [k for k in self.ranked() if self.mean(k) > FAILED][:3]
        if not top:
            return None

        def count(k):
            return len(self.values[k]) + len(self.pending.get(k, [])) + len(extra.get(k, []))

        k = min(top, key=lambda k: (count(k), top.index(k)))
        busy = set(self.pending.get(k, [])) | set(extra.get(k, []))
        retry = [r for r in self.retryable.get(k, []) if r not in busy]
        if retry:
            return dict(self.points[k]), min(retry)
        used = set(self.values[k]) | self.failed_runs.get(k, set()) | busy
        return dict(self.points[k]), max(used) + 1

    def decide(self, action: str, probes=None, runs=None, phase: str = "") -> Decision:
        order = [k for k in self.ranked() if self.mean(k) > FAILED]
        if not order:
            return Decision(action, probes or [], runs or [], phase, spent=self.n_trials)
        k = order[0]
        return Decision(action, probes or [], runs or [], phase, dict(self.points[k]), self.mean(k), len(self.values[k]),
                        self.n_trials)
