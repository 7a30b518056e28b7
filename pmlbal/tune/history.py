"""The trials as the search reads them: `Result` (a finished trial), `History` (the trials grouped
per point: first-run values, all runs, pending and retryable runs) and `Decision` (what to do next,
with the pick so far by the one ranking rule of `ranking.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .dims import Dim, point_key
from .ranking import pick_best, ranked

FAILED = float("-inf")  # a failed or pruned run: never an improvement, never picked


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

    `best` is the pick so far (`ranking.pick_best`: highest mean among confirmed points), `best_value` that mean and
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


def mean_of_runs(runs: Mapping[int, float]) -> float:
    """A point's value: the mean of its runs, FAILED if any run failed."""
    vals = list(runs.values())
    return FAILED if any(v == FAILED for v in vals) else float(np.mean(vals))


class History:
    """The trials grouped per point: first-run values (phases 1-2) and all runs (phase 3, the pick).
    A run that raised more than `retries` times, or was pruned, counts as FAILED."""

    def __init__(self, dims: Sequence[Dim], retries: int, results: Sequence[Result], running) -> None:
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
                failures.setdefault(k, {})[r.run] = retries + 1
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
                if n > retries:
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
        return mean_of_runs(self.values[k])

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
        alive = [k for k in self.values if self.values[k] and self.mean(k) > FAILED]
        k = pick_best(alive, self.mean, lambda k: len(self.values[k]), self.seen)  # the pick's rule
        if k is None:
            return Decision(action, probes or [], runs or [], phase, spent=self.n_trials)
        return Decision(action, probes or [], runs or [], phase, dict(self.points[k]), self.mean(k), len(self.values[k]),
                        self.n_trials)
