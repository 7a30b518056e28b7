"""The trial table: a search's trials grouped once into points and their runs.

Every reader of a search reads this table: the engine (what to run next), `pick`, the report's "pick
so far", the progress bar and the budget. So they cannot disagree about which trials belong to a
point, what a failure does to it, or which point is the pick.

A point is keyed by `point_key` (its values in coordinate order). Each of its runs (run index k, the
k-th training seed) ends in one of three ways:

- a value;
- failed for good: the run diverged or was pruned (the same seed would do it again), or it raised
  more than `retries` times. **A point with a run that failed for good is a failed point**: never an
  improvement, never confirmed, never the pick. A configuration that diverges one time in three is
  not one to hand a user, whatever its other runs scored;
- not yet: running or queued (pending), or raised and still retryable.

The budget counts runs, (point, run index) pairs: a retry of a run that raised, or a run lost with its
worker (`forgiven_losses`), costs nothing more. Reading an Optuna study (`table_of_trials`) decides
which lost trials are forgiven; everything after that is engine-neutral (`Result`s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .dims import Dim, point_key
from .ranking import CONFIRMED_RUNS, TOP_POINTS, PairedGain, paired_gain, pick_best, ranked

FAILED = float("-inf")  # the value of a run that failed for good: never an improvement, never picked

# -- how an Optuna trial is read ----------------------------------------------------------------------
RUN = "run"  # trial user attribute: the run index k of a repeated point (objective seed = base + k)
#: trial user attribute (the error): the run failed in a way the same configuration and seed would
#: repeat (a diverged loss, NaN metrics): failed for good, never run again.
FAILED_FOR_GOOD = "pmlbal:failed_for_good"
PLANNED = "pmlbal:planned"  # trial system attribute: the point the sampler chose, before any suggest
#: How a trial whose worker died (killed, or silent past the grace time) is marked: its "error" user
#: attribute starts with this. Such a run says nothing about its point, so it is run again, as if it
#: had never started, up to LOST_RETRIES times (a run that kills its worker every time, e.g. out of
#: memory, then counts as a failure).
LOST = "lost: "
LOST_RETRIES = 3
#: trial user attribute: lost with the search's own process (found when the search was started
#: again): a killed job, not a failing configuration, so it is always run again.
ORPHAN = "pmlbal:orphan"


@dataclass(frozen=True, eq=False)
class Result:
    """A finished trial as the search sees it: its point, run index (0 = first run of the point) and
    value (to maximise); `value=None` for a trial that raised (tried again up to `retries` times),
    `final=True` for a run that failed for good (diverged, pruned: never retried)."""

    point: Mapping[str, Any]
    run: int = 0
    value: float | None = None
    final: bool = False


@dataclass
class Decision:
    """What to do next: run `probes` (with their run indices `runs`), `wait` for running trials, or `done`.

    `best` is the pick so far (`TrialTable.pick`), `best_value` its mean and `best_runs` the runs
    behind it; `vs_default` its paired gain over the defaults (None when the pick is the defaults or
    the search has none) and `is_default` whether the pick is the defaults; `phase` is "default",
    "explore", "descend", "confirm" or "fill"; `spent` the runs started (what the budget counts).
    """

    action: str
    probes: list[dict[str, Any]] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    phase: str = ""
    best: dict[str, Any] | None = None
    best_value: float | None = None
    best_runs: int = 0
    spent: int = 0
    vs_default: PairedGain | None = None
    is_default: bool = False


@dataclass(frozen=True)
class TablePick:
    """The table's pick: the point, its mean over `runs` runs, and how it compares with the defaults."""

    key: tuple
    params: dict[str, Any]
    value: float
    runs: int
    vs_default: PairedGain | None
    is_default: bool


class TrialTable:
    """The trials of one search grouped per point (module docstring: the rules).

    `names`: the coordinates, in key order. `x0`: the defaults' point (the pick is the defaults unless a
    point beats them on paired runs); `noise`: the s.d. of a paired difference of two runs, the floor
    of that comparison's standard error (`ranking.paired_gain`)."""

    def __init__(self, names: Sequence[str] | Sequence[Dim], retries: int, results: Sequence[Result],
                 running: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], int]] = (),
                 x0: Mapping[str, Any] | None = None, noise: float = 0.0) -> None:
        self.names = [n if isinstance(n, str) else n.name for n in names]
        self.x0_key = point_key(x0, self.names) if x0 is not None else None
        self.noise = float(noise)
        self.points: dict[tuple, dict[str, Any]] = {}
        self.values: dict[tuple, dict[int, float]] = {}
        self.pending: dict[tuple, list[int]] = {}
        self.retryable: dict[tuple, list[int]] = {}
        self.failed_runs: dict[tuple, set[int]] = {}  # runs that raised or failed at least once
        self.trial_count: dict[tuple[tuple, int], int] = {}
        raised: dict[tuple, dict[int, int]] = {}
        for r in results:
            k = self._add(r.point, r.run)
            if r.final:
                raised.setdefault(k, {})[r.run] = retries + 1
            elif r.value is None or math.isnan(float(r.value)):
                raised.setdefault(k, {})[r.run] = raised.get(k, {}).get(r.run, 0) + 1
            else:  # a run reported twice (a trial finished after it was declared lost): its better value
                runs = self.values.setdefault(k, {})
                runs[r.run] = max(runs.get(r.run, -math.inf), float(r.value))
        for item in running:
            point, run = item if isinstance(item, tuple) else (item, 0)
            self.pending.setdefault(self._add(point, int(run)), []).append(int(run))
        for k, per_run in raised.items():
            self.failed_runs[k] = set(per_run)
            for run, n in per_run.items():
                if run in self.values.get(k, {}):
                    continue
                if n > retries:
                    self.values.setdefault(k, {})[run] = FAILED
                else:
                    self.retryable.setdefault(k, []).append(run)
        self._order = {k: i for i, k in enumerate(self.points)}

    def _add(self, point: Mapping[str, Any], run: int) -> tuple:
        k = point_key(point, self.names)
        self.points.setdefault(k, {n: point.get(n) for n in self.names})
        self.trial_count[(k, run)] = self.trial_count.get((k, run), 0) + 1
        return k

    # -- counts ------------------------------------------------------------------------------------
    @property
    def spent(self) -> int:
        """Runs started, finished or running: what the budget counts (a retry is the same run)."""
        return len(self.trial_count)

    @property
    def n_running(self) -> int:
        return sum(len(v) for v in self.pending.values())

    @property
    def ended(self) -> int:
        """Runs that ended: with a value, or failed for good (a retryable failure has not ended)."""
        return sum(len(v) for v in self.values.values())

    @property
    def first_runs(self) -> dict[tuple, float]:
        """Each point's first run (run 0), where it ended: what the explore and descend phases read."""
        return {k: v[0] for k, v in self.values.items() if 0 in v}

    @property
    def first_pending(self) -> set[tuple]:
        return {k for k, runs in self.pending.items() if 0 in runs}

    @property
    def first_tried(self) -> set[tuple]:
        """Points whose first run was started (ended, running, or failed and retryable)."""
        return {k for (k, run) in self.trial_count if run == 0}

    # -- a point ---------------------------------------------------------------------------------
    def mean(self, k: tuple) -> float:
        """The mean of a point's runs; FAILED if one failed for good (a failed point)."""
        vals = list(self.values[k].values())
        return FAILED if any(v == FAILED for v in vals) else sum(vals) / len(vals)

    def runs(self, k: tuple) -> int:
        return len(self.values.get(k, {}))

    def seen(self, k: tuple) -> int:
        """The order point `k` was first seen in (its first trial)."""
        return self._order[k]

    def alive(self) -> list[tuple]:
        """Points with at least one ended run and none failed for good."""
        return [k for k in self.values if self.values[k] and self.mean(k) > FAILED]

    def ranked(self) -> list[tuple]:
        """The alive points, best first (`ranking.ranked`)."""
        return ranked(self.alive(), self.mean, self.runs, self.seen)

    def top(self) -> list[tuple]:
        """The `TOP_POINTS` best alive points other than the defaults."""
        return [k for k in self.ranked() if k != self.x0_key][:TOP_POINTS]

    # -- the pick ----------------------------------------------------------------------------------
    def pick(self) -> TablePick | None:
        """The best alive point by `ranking.pick_best`, unless the search started from the defaults and
        that point is unconfirmed (fewer than `CONFIRMED_RUNS` runs) or does not beat them on paired runs
        by more than the standard error: then the defaults. None when no point has a run that ended well."""
        alive = self.alive()
        k = pick_best(alive, self.mean, self.runs, self.seen)
        if k is None:
            return None
        x0 = self.x0_key if self.x0_key in alive else None
        if x0 is None:
            return self._pick(k, None, False)
        if k == x0:  # the defaults rank first; the report still compares the best other point with them
            other = pick_best([p for p in alive if p != x0], self.mean, self.runs, self.seen)
            gain = None if other is None else paired_gain(self.values[other], self.values[x0], self.noise)
            return self._pick(x0, gain if gain is not None and gain.pairs else None, True)
        gain = paired_gain(self.values[k], self.values[x0], self.noise)
        confirmed = self.runs(k) >= CONFIRMED_RUNS
        return self._pick(k, gain, False) if gain.beats and confirmed else self._pick(x0, gain, True)

    def _pick(self, k: tuple, gain: PairedGain | None, is_default: bool) -> TablePick:
        return TablePick(k, dict(self.points[k]), self.mean(k), self.runs(k), gain, is_default)

    def decide(self, action: str, probes=None, runs=None, phase: str = "") -> Decision:
        p = self.pick()
        if p is None:
            return Decision(action, probes or [], runs or [], phase, spent=self.spent)
        return Decision(action, probes or [], runs or [], phase, p.params, p.value, p.runs, self.spent, p.vs_default,
                        p.is_default)

    def next_run(self, k: tuple, busy: Sequence[int] = ()) -> int:
        """The run index a re-run of point `k` takes: a retryable one first, else the next new index."""
        busy = set(self.pending.get(k, [])) | set(busy)
        retry = [r for r in self.retryable.get(k, []) if r not in busy]
        if retry:
            return min(retry)
        used = set(self.values.get(k, {})) | self.failed_runs.get(k, set()) | busy
        return max(used) + 1 if used else 0


# -- an Optuna study's trials ---------------------------------------------------------------------------
def trial_point(trial) -> dict[str, Any]:
    """The point a trial runs: the sampler's plan, the params it was enqueued with, then its params."""
    return {**trial.system_attrs.get(PLANNED, {}), **trial.system_attrs.get("fixed_params", {}), **trial.params}


def trial_run(trial) -> int:
    return int(trial.user_attrs.get(RUN, 0))


def _lost(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and str(trial.user_attrs.get("error", "")).startswith(LOST)


def forgiven_losses(trials: Sequence[Any], names: Sequence[str] | None = None) -> set[int]:
    """Numbers of the lost trials to read as never run: orphans of a killed search, and those of a
    (point, run) whose worker died at most LOST_RETRIES times (a SIGKILL says nothing about the
    configuration; a run that kills every worker does)."""
    lost: dict[tuple, list[int]] = {}
    orphans = set()
    for t in trials:
        if _lost(t):
            if t.user_attrs.get(ORPHAN):
                orphans.add(t.number)
            else:
                point = trial_point(t)
                lost.setdefault((point_key(point, names or sorted(point)), trial_run(t)), []).append(t.number)
    return orphans | {n for numbers in lost.values() if len(numbers) <= LOST_RETRIES for n in numbers}


def trials_as_results(trials: Sequence[Any], dims: Sequence[Dim] | None, maximize: bool = True,
                      finishing: tuple[Any, Any, float | None] | None = None, in_box: bool = True,
                      ) -> tuple[list[Result], list[tuple[dict[str, Any], int]]]:
    """A study's trials as the table reads them: (finished `Result`s with values signed so that the
    engine maximises, running and queued (point, run) pairs). Complete trials give values, failed ones
    a retryable failure (final when FAILED_FOR_GOOD), pruned ones a final failure, forgiven lost ones
    nothing (the run is asked for again). With `dims`, trials that lack a coordinate, or with `in_box`
    lie outside the box (a study resumed with another range), are left out; without it any value
    counts (another sampler's, e.g. TPE's). `finishing`: a trial that has just finished but whose state is
    not yet in storage (Optuna's `after_trial`), as (trial, state, value)."""
    from optuna.trial import TrialState

    sign = 1.0 if maximize else -1.0
    names = [d.name for d in dims] if dims is not None else None
    results, running = [], []
    forgiven = forgiven_losses(trials, names)

    def add(t, state, value: float | None) -> None:
        point = trial_point(t)
        if dims is not None and not all(d.name in point and (not in_box or d.contains(point[d.name])) for d in dims):
            return
        run = trial_run(t)
        if state == TrialState.COMPLETE:
            results.append(Result(point, run, sign * value if value is not None else None))
        elif state == TrialState.FAIL:
            results.append(Result(point, run, None, final=FAILED_FOR_GOOD in t.user_attrs))
        elif state == TrialState.PRUNED:  # a deliberate verdict, not an accident: no retry
            results.append(Result(point, run, final=True))
        elif state in (TrialState.RUNNING, TrialState.WAITING):
            running.append((point, run))

    for t in trials:
        if (finishing is not None and t.number == finishing[0].number) or t.number in forgiven:
            continue
        add(t, t.state, t.value if t.state == TrialState.COMPLETE else None)
    if finishing is not None:
        add(*finishing)
    return results, running


def table_of_trials(trials: Sequence[Any], dims: Sequence[Dim] | None = None, maximize: bool = True,
                    retries: int = 1, x0: Mapping[str, Any] | None = None, noise: float = 0.0,
                    finishing: tuple[Any, Any, float | None] | None = None, in_box: bool = True) -> TrialTable:
    """The `TrialTable` of an Optuna study's trials (`trials_as_results`); without `dims` the points are
    keyed by all their parameters, sorted by name."""
    results, running = trials_as_results(trials, dims, maximize, finishing, in_box)
    if dims is not None:
        names: Sequence[str] = [d.name for d in dims]
    else:
        names = sorted({n for r in results for n in r.point} | {n for p, _ in running for n in p})
    return TrialTable(names, retries, results, running, x0, noise)
