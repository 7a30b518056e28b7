"""The search's phases (docs/tuner.md) as functions of the plan and the trial table.

Phases 1 and 2 (the defaults and explore, then descend) are one procedure written as if the
objective's first-run values were a function; `replay` runs it against the table, and the first
values it misses become the next probes (`probes_for`). Phase 3 (confirm) re-runs the best points and
the defaults, in rounds (`confirm_rounds`), or one at a time for a caller that must propose a point
(`fill`).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator

from .dims import point_key
from .plan import SearchPlan
from .ranking import TOP_POINTS, confirm_choice, ranked
from .trials import FAILED, Decision, TrialTable

_IDLE_STARTS = 25  # consecutive restarts that find no new point: the box is exhausted


class Need(Exception):
    """Raised by the replayed objective: the first-run values of `points` are not known yet."""

    def __init__(self, points):
        self.points = points


# -- phases 1 and 2: the defaults and explore, then descend -------------------------------------------
def replay(plan: SearchPlan, table: TrialTable) -> Decision | None:
    """Phases 1 and 2 replayed against the table's first-run values: the probes for the first values
    missing (or "wait", or "done" when the budget is spent), None once the two phases are over."""
    requested: set = set()

    def f(points):
        missing, vals = [], []
        for p in points:
            k = point_key(p, plan.dims)
            requested.add(k)
            v = table.first_runs.get(k)
            if v is None:
                missing.append(p)
            else:
                vals.append(v)
        if missing:
            raise Need(missing)
        return vals

    explored = {point_key(p, plan.dims) for p in [plan.x0, *plan.explore_points()]}
    phase = "explore" if explored - set(table.first_runs) else "descend"
    try:
        explore_then_descend(plan, f, requested)
    except Need as need:
        return probes_for(plan, table, need.points, phase)
    return None


def explore_then_descend(plan: SearchPlan, f: Callable[[list[dict]], list[float]], requested: set) -> None:
    """Phases 1 and 2; returns when the box is exhausted (or, without a budget, when converged).
    Running out of phase 2's budget surfaces as a `Need` the caller cannot serve.

    Phase 1 runs the defaults and the R explore points together (they do not depend on each other);
    the descents start from them best first, the defaults first on a tie."""
    points = [dict(plan.x0)] + plan.explore_points()
    vals = f(points)
    order = sorted(range(len(points)), key=lambda i: (-vals[i], i))
    starts: Iterator[dict] = iter([points[i] for i in order])
    idle = 0
    for start in itertools.chain(starts, (plan.restart_point(k) for k in itertools.count())):
        before = len(requested)
        descend(plan, dict(start), f)
        if plan.budget is None:
            return
        idle = 0 if len(requested) > before else idle + 1
        if idle >= _IDLE_STARTS:
            return


def descend(plan: SearchPlan, x: dict[str, Any], f: Callable[[list[dict]], list[float]]) -> None:
    """Coordinate descent from `x`, written as if `f` (first-run values, one training seed: every
    comparison is paired) were a function. Per sweep, each coordinate in `plan.order` is probed one
    step up and one down (both at once); if the better probe beats f(x) by more than `plan.tol` the
    descent moves there and keeps stepping that way while it improves, otherwise that coordinate's
    step is halved (not below its minimum). It ends when a sweep at minimum steps moves nothing."""
    fx = f([x])[0]
    steps = {d.name: d.default_step() for d in plan.dims}
    mins = {d.name: d.default_min_step() for d in plan.dims}
    while True:
        # Converged only once a whole sweep at minimum steps moved nothing.
        at_min = all(d.scale == "categorical" or steps[d.name] <= mins[d.name] for d in plan.dims)
        moved = False
        for name in plan.order:
            dim = plan.by_name[name]
            cand = plan.moves(x, name, steps[name])
            if not cand:
                steps[name] = dim.halve(steps[name], mins[name])
                continue
            vals = f([p for _, p in cand])
            i = max(range(len(cand)), key=lambda j: vals[j])
            if vals[i] > fx + plan.tol:
                direction, x, fx = cand[i][0], cand[i][1], vals[i]
                moved = True
                while dim.scale != "categorical":
                    nxt = [p for d, p in plan.moves(x, name, steps[name]) if d == direction]
                    if not nxt:
                        break
                    v = f(nxt)[0]
                    if v > fx + plan.tol:
                        x, fx = nxt[0], v
                    else:
                        break
            elif dim.scale != "categorical":
                steps[name] = dim.halve(steps[name], mins[name])
        if not moved and at_min:
            return


def probes_for(plan: SearchPlan, table: TrialTable, points: list[dict], phase: str) -> Decision | None:
    """Probes for the first values the procedure misses; None when phase 2 has no budget left."""
    todo, new_keys = [], set()
    cap = plan.descend_budget
    room_new = None if cap is None else cap - len(table.first_tried)
    room_total = None if plan.budget is None else plan.budget - table.spent
    waiting = False
    for p in points:
        k = point_key(p, plan.dims)
        if k in table.first_pending:
            waiting = True
            continue
        if k in new_keys:
            continue
        is_new = k not in table.first_tried
        if is_new and room_new is not None and len([1 for q in todo if q[2]]) >= room_new:
            continue
        todo.append((p, k, is_new))
        new_keys.add(k)
    if room_total is not None:  # retries of a run that raised are free; new runs fill the budget
        allowed = set(list(dict.fromkeys(k for _, k, new in todo if new))[:max(room_total, 0)])
        todo = [t for t in todo if not t[2] or t[1] in allowed]
    if todo:
        return table.decide("probe", [p for p, _, _ in todo], [0] * len(todo), phase)
    if waiting or (room_total is not None and room_total <= 0 and table.n_running):
        return table.decide("wait", phase=phase)
    if room_total is not None and room_total <= 0:
        return table.decide("done", phase="confirm")
    return None


# -- phase 3: confirm ---------------------------------------------------------------------------------
def candidates(keys: Iterable[tuple], mean: Callable[[tuple], float], runs: Callable[[tuple], int],
               seen: Callable[[tuple], int], x0_key: tuple | None) -> list[tuple]:
    """The points the confirm phase re-runs: the `TOP_POINTS` best of `keys` by `mean` (the defaults
    left out), then the defaults (the pick's reference must be measured as often as the others)."""
    alive = [k for k in keys if mean(k) > FAILED]
    top = [k for k in ranked(alive, mean, runs, seen) if k != x0_key][:TOP_POINTS]
    return top + ([x0_key] if x0_key in alive else [])


def confirm_rounds(plan: SearchPlan, table: TrialTable) -> Decision:
    """Phase 3 in rounds, one re-run per candidate at most (`candidates`: the best three and the
    defaults). A round is chosen from the runs known when it starts (first runs and earlier rounds),
    so its re-runs can run in parallel and a replay after a kill chooses exactly what the
    uninterrupted search chose."""
    spent = sum(1 for (k, run) in table.trial_count if run == 0)
    known = {k: {0: v} for k, v in table.first_runs.items()}

    def mean(k):
        vals = list(known[k].values())
        return FAILED if FAILED in vals else sum(vals) / len(vals)

    while True:
        room = plan.budget - spent
        chosen: list[tuple[tuple, int]] = []
        cands = candidates(known, mean, lambda k: len(known[k]), table.seen, table.x0_key)
        for _ in range(max(0, min(room, len(cands)))):
            k = confirm_choice(cands, lambda k: len(known[k]) + sum(1 for c, _ in chosen if c == k))
            chosen.append((k, len(known[k]) + sum(1 for c, _ in chosen if c == k)))
        if not chosen:
            return table.decide("wait" if table.n_running else "done", phase="confirm")
        missing = []
        for k, run in chosen:
            spent += 1 if (k, run) in table.trial_count else 0
            if run not in table.values.get(k, {}):
                missing.append((k, run))
        if missing:
            todo = [(k, run) for k, run in missing if run not in table.pending.get(k, [])]
            new_room, kept = max(0, plan.budget - table.spent), []
            for t in todo:  # retries (a run already tried) are free; new runs fill the budget
                if t in table.trial_count or new_room > 0:
                    new_room -= t not in table.trial_count
                    kept.append(t)
            if kept:
                return table.decide("probe", [dict(table.points[k]) for k, _ in kept], [run for _, run in kept],
                                    "confirm")
            return table.decide("wait" if table.n_running else "done", phase="confirm")
        for k, run in chosen:
            known[k][run] = table.values[k][run]


def fill(plan: SearchPlan, table: TrialTable, room: int) -> Decision:
    """Up to `room` re-runs by the confirm choice over the whole table (running runs counted), for a
    caller that must propose a point now: at a barrier, or past the budget (phase "fill")."""
    probes, runs = [], []
    busy: dict[tuple, list[int]] = {}

    def count(k):
        return table.runs(k) + len(table.pending.get(k, [])) + len(busy.get(k, []))

    cands = candidates([k for k in table.values if table.values[k]], table.mean, table.runs, table.seen, table.x0_key)
    for _ in range(max(0, min(room, len(cands)))):
        k = confirm_choice(cands, count)
        run = table.next_run(k, busy.get(k, []))
        busy.setdefault(k, []).append(run)
        probes.append(dict(table.points[k]))
        runs.append(run)
    if probes:
        return table.decide("probe", probes, runs, "fill")
    return table.decide("wait" if table.n_running else "done", phase="fill")
