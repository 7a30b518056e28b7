"""The search's phases (SPEC section 5, version 2) as functions of the engine and the trials.

Phases 1 and 2 (explore, then descend) are one procedure written as if the objective's first-run
values were a function; `replay` runs it against the trials so far, and the first values it misses
become the next probes (`probes_for`). Phase 3 (confirm) re-runs the top 3 points by mean, in
rounds (`confirm_rounds`), or one at a time for a caller that must propose a point (`confirm_extra`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .dims import Dim, point_key
from .history import FAILED, Decision, History, mean_of_runs
from .ranking import ranked

if TYPE_CHECKING:
    from .coordinate_descent import CoordinateDescent

_IDLE_STARTS = 25  # consecutive restarts that find no new point: the box is exhausted


class Need(Exception):
    """Raised by the replayed objective: the first-run values of `points` are not known yet."""

    def __init__(self, points):
        self.points = points


# -- phases 1 and 2: explore, then descend ---------------------------------------------------------
def replay(cd: CoordinateDescent, h: History) -> Decision | None:
    """Phases 1 and 2 replayed against the trials' first-run values: the probes for the first values
    missing (or "wait", or "done" when the budget is spent), None once the two phases are over."""
    requested: set = set()

    def f(points):
        missing, vals = [], []
        for p in points:
            k = point_key(p, cd.dims)
            requested.add(k)
            v = h.first.get(k)
            if v is None:
                missing.append(p)
            else:
                vals.append(v)
        if missing:
            raise Need(missing)
        return vals

    phase = "explore" if cd.explore_size and len(h.first) < cd.explore_size else "descend"
    try:
        explore_then_descend(cd, f, requested)
    except Need as need:
        return probes_for(cd, h, need.points, phase)
    return None


def explore_then_descend(cd: CoordinateDescent, f: Callable[[list[dict]], list[float]], requested: set) -> None:
    """Phases 1 and 2; returns when the box is exhausted (or, without a budget, when converged).
    Running out of phase 2's budget surfaces as a `Need` the caller cannot serve."""
    plan = cd.explore_points()
    if plan:
        vals = f(plan)
        starts: Iterator[dict] = iter([p for _, _, p in sorted(zip(vals, range(len(plan)), plan),
                                                            key=lambda t: (-t[0], t[1]))])
    else:
        starts = iter([dict(cd.x0)])
    idle = 0
    for start in itertools.chain(starts, (cd.restart_point(k) for k in itertools.count())):
        before = len(requested)
        descend(cd, dict(start), f)
        if cd.budget is None:
            return
        idle = 0 if len(requested) > before else idle + 1
        if idle >= _IDLE_STARTS:
            return


def descend(cd: CoordinateDescent, x: dict[str, Any], f: Callable[[list[dict]], list[float]]) -> None:
    """Version 1's coordinate descent from `x`, written as if `f` (first-run values) were a function."""
    fx = f([x])[0]
    steps = {d.name: d.default_step() for d in cd.dims}
    mins = {d.name: d.default_min_step() for d in cd.dims}
    while True:
        # Converged only once a whole sweep at minimum steps moved nothing.
        at_min = all(d.scale == "categorical" or steps[d.name] <= mins[d.name] for d in cd.dims)
        moved = False
        for name in cd.order:
            dim = cd.by_name[name]
            cand = [(d, {**x, name: y}) for d, y in dim.neighbours(x[name], steps[name])]
            if not cand:
                steps[name] = dim.halve(steps[name], mins[name])
                continue
            vals = f([p for _, p in cand])
            i = max(range(len(cand)), key=lambda j: vals[j])
            if vals[i] > fx + cd.tol:
                direction, x, fx = cand[i][0], cand[i][1], vals[i]
                moved = True
                while dim.scale != "categorical":
                    nxt = [y for d, y in dim.neighbours(x[name], steps[name]) if d == direction]
                    if not nxt:
                        break
                    p = {**x, name: nxt[0]}
                    v = f([p])[0]
                    if v > fx + cd.tol:
                        x, fx = p, v
                    else:
                        break
            elif dim.scale != "categorical":
                steps[name] = dim.halve(steps[name], mins[name])
        if not moved and at_min:
            return


def probes_for(cd: CoordinateDescent, h: History, points: list[dict], phase: str) -> Decision | None:
    """Probes for the first values the procedure misses; None when phase 2 has no budget left."""
    todo, new_keys = [], set()
    cap = None if cd.budget is None else cd.budget - cd.explore_size
    room_new = None if cap is None else cap - len(h.first_tried)
    room_total = None if cd.budget is None else cd.budget - h.n_trials
    waiting = False
    for p in points:
        k = point_key(p, cd.dims)
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


# -- phase 3: confirm -------------------------------------------------------------------------------
def confirm_rounds(h: History, budget: int) -> Decision:
    """Phase 3 in rounds of up to 3 re-runs. A round is chosen from the runs known when it
    starts (first runs and earlier rounds), so its re-runs can run in parallel and a replay
    after a kill chooses exactly what the uninterrupted search chose."""
    spent = sum(1 for (k, run) in h.trial_count if run == 0)
    known = {k: {0: v} for k, v in h.first.items()}
    while True:
        room = budget - spent
        chosen: list[tuple[tuple, int]] = []
        for _ in range(max(0, min(room, 3))):
            top = ranked([k for k in known if mean_of_runs(known[k]) > FAILED], lambda k: mean_of_runs(known[k]),
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


def confirm_extra(h: History, dims: Sequence[Dim], room: int, phase: str) -> Decision:
    """Phase 3: up to 3 re-runs, each of the top-3 point (by mean) with the fewest runs."""
    probes, runs = [], []
    extra: dict[tuple, list[int]] = {}
    for _ in range(max(0, min(room, 3))):
        pick = h.confirm_probe(extra)
        if pick is None:
            break
        point, run = pick
        extra.setdefault(point_key(point, dims), []).append(run)
        probes.append(point)
        runs.append(run)
    if probes:
        return h.decide("probe", probes, runs, phase)
    return h.decide("wait" if h.n_running else "done", phase=phase)

