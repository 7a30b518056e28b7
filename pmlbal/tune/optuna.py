"""CoordinateDescentSampler: the search of docs/tuner.md as an Optuna sampler; `pick`: the pick of any study."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from . import store
from .coordinate_descent import CoordinateDescent
from .dims import Dim, distribution_of
from .ranking import PairedGain
from .trials import (FAILED_FOR_GOOD, LOST, LOST_RETRIES, ORPHAN, PLANNED, RUN, Decision, forgiven_losses,
                     table_of_trials, trial_point, trial_run, trials_as_results)

#: The study attribute `pmlbal tune` keeps its spec in (`spec.SPEC`): the pick reads its defaults.
SPEC = "pmlbal:spec"
_logger = optuna.logging.get_logger(__name__)


def _is_power_of_two(x: float) -> bool:
    return x > 0 and float(x).is_integer() and (int(x) & (int(x) - 1)) == 0


def dim_from_distribution(name: str, dist: BaseDistribution, step: float | None = None,
                          min_step: float | None = None) -> Dim:
    """Optuna distribution -> coordinate (the inverse of `dims.distribution_of`). Floats: log or linear
    (its `step` is the grid); ints: linear with their step as grid, and with ``log=True`` powers of two
    when both bounds are powers of two (batch sizes), else whole numbers moved by factors; categorical as is."""
    if isinstance(dist, CategoricalDistribution):
        return Dim(name, "categorical", choices=tuple(dist.choices))
    if isinstance(dist, IntDistribution):
        if dist.log:
            scale = "log2-int" if _is_power_of_two(dist.low) and _is_power_of_two(dist.high) else "log-int"
            return Dim(name, scale, dist.low, dist.high, step=step, min_step=min_step)
        return Dim(name, "int", dist.low, dist.high, step=step, min_step=min_step, grid=dist.step)
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return Dim(name, "log", dist.low, dist.high, step=step, min_step=min_step)
        return Dim(name, "linear", dist.low, dist.high, step=step, min_step=min_step, grid=dist.step)
    raise ValueError(f"{name}: unsupported distribution {dist!r}")


def _maximize(direction) -> bool:
    return direction == optuna.study.StudyDirection.MAXIMIZE


def decide_from_trials(cd: CoordinateDescent, trials: Sequence[FrozenTrial], direction,
                       finishing: tuple[FrozenTrial, TrialState, float | None] | None = None,
                       fill: bool = False) -> Decision:
    """Replay `cd` on a study's trials (`trials.trials_as_results`); failed runs are retried `cd.plan.retries` times."""
    results, running = trials_as_results(trials, cd.dims, _maximize(direction), finishing)
    decision = cd.ask(results, running, fill_in=fill)
    if decision.best_value is not None and not _maximize(direction):
        decision.best_value *= -1.0
    return decision


@dataclass(frozen=True)
class Pick:
    """A study's pick (`pick`): the point, its mean over `runs` complete runs (trial numbers `trials`),
    its paired gain over the defaults (`vs_default`, None without defaults or when it is them) and
    whether it is the defaults (`is_default`: no configuration beat them)."""

    params: dict[str, Any]
    value: float
    runs: int
    trials: tuple[int, ...]
    vs_default: PairedGain | None = None
    is_default: bool = False


def study_defaults(study: optuna.Study) -> tuple[dict[str, Any] | None, float]:
    """The defaults a study's pick is compared with, and the noise floor of that comparison: from the
    spec of a `pmlbal tune` study, else from its `CoordinateDescentSampler` in this process, else none."""
    spec = study.user_attrs.get(SPEC) or {}
    if spec.get("x0") is not None:
        return dict(spec["x0"]), float(spec.get("noise") or 0.0)
    sampler = getattr(study, "sampler", None)
    if isinstance(sampler, CoordinateDescentSampler) and sampler.last_plan is not None:
        return dict(sampler.last_plan.x0), sampler.last_plan.noise
    return None, 0.0


def pick(study: optuna.Study, retries: int = 1) -> Pick | None:
    """The study's pick (`trials.TrialTable.pick`): the point with the highest mean of its complete runs
    (lowest for a minimising study) among the confirmed points, those with two runs or more, if any,
    ties to more runs, then the earlier point; where the study has defaults (`study_defaults`), that
    point only if it beats them on paired runs by more than the standard error, else the defaults.
    A point with a run that failed for good (pruned, diverged, raised more than `retries` times, or
    lost with its worker more than LOST_RETRIES times) is never the pick. None when no trial is complete."""
    if len(study.directions) > 1:
        raise ValueError("pick needs a single-objective study")
    trials = study.get_trials(deepcopy=False, states=ENDED)
    table = study_table(study, trials, retries)
    chosen = table.pick()
    if chosen is None:
        return None
    sign = 1.0 if _maximize(study.direction) else -1.0
    numbers = tuple(sorted(t.number for t in trials if t.state == TrialState.COMPLETE
                           and table_key(table, t) == chosen.key))
    params = dict(next(t for t in trials if t.number == numbers[0]).params)
    return Pick(params, sign * chosen.value, chosen.runs, numbers, chosen.vs_default, chosen.is_default)


ENDED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def study_table(study: optuna.Study, trials: Sequence[FrozenTrial], retries: int = 1):
    """The trial table of some of a study's `trials`, keyed by all their parameters, with the study's
    defaults (`study_defaults`) where they name the same coordinates."""
    x0, noise = study_defaults(study)
    names = sorted({n for t in trials for n in trial_point(t)})
    if x0 is not None and set(x0) != set(names):
        x0 = None  # trials of another space: no defaults to compare with
    return table_of_trials(trials, None, _maximize(study.direction), retries, x0, noise)


def table_key(table, trial: FrozenTrial) -> tuple:
    from .dims import point_key

    return point_key(trial_point(trial), table.names)


def _single_objective(study: optuna.Study) -> None:
    if len(study.directions) > 1:
        raise ValueError("CoordinateDescentSampler optimises one objective; this study has "
                         f"{len(study.directions)} directions (use a multi-objective sampler such as NSGAIISampler)")


class CoordinateDescentSampler(optuna.samplers.BaseSampler):
    """pmlbal's noise-aware coordinate descent (docs/tuner.md, search version 3) as an Optuna sampler.

    With ``budget=B``, ``study.optimize(objective, n_trials=B)`` spends B trials: the defaults `x0`
    (default: each range's centre) and R = B // 4 scrambled-Sobol points (scipy, seeded by `seed`),
    coordinate descent from the best of them (then from the next, then from random points) without
    re-running a point, a move needing more than `tol` of improvement, and the last R trials
    re-running the 3 best points by mean and the defaults. `pmlbal.tune.pick(study)` gives the best
    confirmed point if it beats the defaults on paired runs by more than the standard error (never
    below ``noise / sqrt(pairs)``), else the defaults. A re-run is a trial with the same parameters
    and ``trial.user_attrs["run"] = k`` (k = 1, 2, ...; 0 for first runs), which the objective adds to
    its seed, so run k of every point shares its seed and comparisons are paired. With
    ``budget=None`` the search is version 1: one descent from `x0`, which stops the study once
    converged. `coupled` moves a coordinate's partner with it (`pmlbal.tune.plan.SearchPlan`).

    The space is `search_space` (Optuna distributions or `Dim`s) when given, else read from the
    objective's ``suggest_*`` calls: parameters present in every finished trial, with the latest
    trial's distribution; the first trial then runs `x0`. Parameters asked only by some trials
    (conditional spaces) are drawn by `independent_sampler` (default ``RandomSampler(seed)``). A
    changed range starts the plan again over the new box; earlier trials inside it still count.
    Every value lies inside its distribution, on its ``step`` grid; moves on a grid are whole steps.

    The state is recomputed from the study's trials at every call, so a study loaded from storage
    resumes trial for trial, and several processes may share it. A trial that raises is asked for
    again once (`retries`) before it counts as no improvement; a pruned trial counts at once.

    Contract: inside ``optimize`` the sampler stops the study when the budget is spent (or, without
    a budget, at convergence); ``tell`` never raises on its account. A trial asked while the next
    probes are still running (``n_jobs > 1``, several asks before a tell), or past the budget,
    re-runs a point by the confirm choice and logs why. `seed` fixes every random choice;
    ``reseed_rng()`` reseeds only the independent sampler, as Optuna's QMCSampler does, so the plan
    stays a function of `seed` and the trials. ``seed=None`` draws a seed once: pass one to resume
    a study in another process. Single-objective studies only (``ValueError`` otherwise).

    Examples:
        >>> sampler = CoordinateDescentSampler(budget=33, seed=0)
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
        >>> # study.optimize(objective, n_trials=33); pick(study).params
    """

    def __init__(self, budget: int | None = None, seed: int | None = None, *, x0: Mapping[str, Any] | None = None,
                 step: Mapping[str, float] | None = None, min_step: Mapping[str, float] | None = None,
                 tol: float = 0.0, order: Sequence[str] | None = None, retries: int = 1,
                 search_space: Mapping[str, BaseDistribution] | Sequence[Dim] | None = None,
                 independent_sampler: optuna.samplers.BaseSampler | None = None,
                 coupled: Mapping[str, tuple[str, float]] | None = None, noise: float = 0.0) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be >= 1 or None, got {budget}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
            _logger.info("CoordinateDescentSampler: no seed given, using %d (pass it to resume elsewhere)", seed)
        self.seed, self.budget = int(seed), budget
        self.x0, self.step, self.min_step = dict(x0 or {}), dict(step or {}), dict(min_step or {})
        self.tol, self.order, self.retries = tol, list(order) if order is not None else None, retries
        self.coupled, self.noise = dict(coupled or {}), float(noise)
        self.last_plan = None  # the plan of the latest decision: `pick` reads its defaults
        self._dims: list[Dim] | None = None
        self._space: dict[str, BaseDistribution] | None = None
        if search_space is not None:
            items = list(search_space.items()) if isinstance(search_space, Mapping) else None
            if items is not None:
                self._space = dict(items)
            else:
                self._dims = list(search_space)
                self._space = {d.name: distribution_of(d) for d in self._dims}
        self._independent = independent_sampler or optuna.samplers.RandomSampler(seed=self.seed)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        # Like QMCSampler: the plan must stay one function of (seed, trials) in every worker, so
        # only the sampler of conditional parameters is reseeded.
        self._independent.reseed_rng()

    # -- the space ------------------------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        _single_objective(study)
        if self._space is not None:
            return dict(self._space)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if not finished:
            # As QMCSampler: before any trial finished, the running trials' parameters (n_jobs > 1).
            running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.distributions]
            return dict(running[0].distributions) if running else {}
        names = set.intersection(*(set(t.distributions) for t in finished))
        latest: dict[str, BaseDistribution] = {}
        for t in sorted(finished, key=lambda t: t.number):
            latest.update({n: d for n, d in t.distributions.items() if n in names})
        return latest

    def engine(self, search_space: Mapping[str, BaseDistribution]) -> CoordinateDescent:
        if self._dims is not None and set(search_space) == {d.name for d in self._dims}:
            dims = {d.name: d for d in self._dims}
        else:
            dims = {n: dim_from_distribution(n, search_space[n], self.step.get(n), self.min_step.get(n))
                    for n in search_space}
        names = [n for n in self.order if n in dims] if self.order is not None else []
        names += sorted(n for n in dims if n not in names)
        x0 = {k: v for k, v in self.x0.items() if k in dims and _valid(dims[k], v)}
        coupled = {k: v for k, v in self.coupled.items() if k in dims and v[0] in dims}
        cd = CoordinateDescent([dims[n] for n in names], x0, self.tol, self.budget, names, self.seed, self.retries,
                               coupled, self.noise)
        self.last_plan = cd.plan
        return cd

    def decide(self, study: optuna.Study, search_space: Mapping[str, BaseDistribution] | None = None,
               finishing: tuple[FrozenTrial, TrialState, float | None] | None = None, exclude: int | None = None,
               fill: bool = False) -> Decision:
        """The engine's decision on the study's trials (`exclude`: a trial number to leave out)."""
        space = self.infer_relative_search_space(study, None) if search_space is None else search_space
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != exclude]
        return decide_from_trials(self.engine(space), trials, study.direction, finishing, fill)

    # -- Optuna's interface ----------------------------------------------------------------------
    def before_trial(self, study, trial: FrozenTrial) -> None:
        _single_objective(study)
        self._independent.before_trial(study, trial)
        space = {} if "fixed_params" in trial.system_attrs else self.infer_relative_search_space(study, trial)
        # No space: enqueued with its point (and run) by the coordinator or the user, or the first trial.
        if not (space and self._plan(study, trial, space)) and RUN not in trial.user_attrs:
            store.set_trial_user_attr(study, trial, RUN, 0)
            trial.user_attrs[RUN] = 0

    def _plan(self, study, trial: FrozenTrial, space: Mapping[str, BaseDistribution]) -> dict[str, Any] | None:
        """Decide this trial's point and run index and write both on the trial, so that the next
        plan (another thread under n_jobs > 1, another process) sees it as running."""
        with self._lock:  # one plan at a time, each written before the next is made
            decision = self.decide(study, space, exclude=trial.number, fill=True)
            if decision.action != "probe":
                return None
            point, run = decision.probes[0], decision.runs[0]
            if decision.phase == "fill":
                _logger.info("trial %d re-runs %s (run %d): %s", trial.number, point, run,
                             "budget spent" if self._spent(study, trial) else "waiting for running probes")
            # A sampler's own bookkeeping on the trial, as Optuna's GridSampler keeps its grid id.
            store.set_trial_system_attr(study, trial, PLANNED, point)
            store.set_trial_user_attr(study, trial, RUN, run)
            # The Trial object caches this FrozenTrial: let the objective see its run index now.
            trial.system_attrs[PLANNED] = point
            trial.user_attrs[RUN] = run
            return point

    def _spent(self, study, trial) -> bool:
        return self.budget is not None and len([t for t in study.get_trials(deepcopy=False)
                                                if t.number != trial.number]) >= self.budget

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        _single_objective(study)
        if not search_space:
            return {}
        planned = trial.system_attrs.get(PLANNED)
        if planned is None or set(planned) != set(search_space):
            planned = self._plan(study, trial, search_space)
            if planned is None:
                return {}
        return {k: v for k, v in planned.items() if k in search_space}

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        _single_objective(study)
        dim = dim_from_distribution(param_name, param_distribution)
        planned = trial.system_attrs.get(PLANNED, {}) if trial is not None else {}
        if param_name in planned:
            # Planned over an older range than the objective now asks for: the nearest valid value.
            return _nearest(dim, planned[param_name])
        if self._space is None and not [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]:
            # The study's first trial, before any space is known: the defaults. (Trials started
            # alongside it, under n_jobs > 1, are drawn independently: they add points, not repeats.)
            return _nearest(dim, self.x0[param_name]) if param_name in self.x0 else dim.centre()
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._independent.after_trial(study, trial, state, values)
        if len(study.directions) > 1:
            return
        # The finishing trial is not in storage as finished yet: its distributions are the latest.
        space = self.infer_relative_search_space(study, trial)
        space = {**space, **{n: d for n, d in trial.distributions.items() if n in space}} or dict(trial.distributions)
        if not space:
            return
        value = values[0] if state == TrialState.COMPLETE and values else None
        # Done: the budget is spent on this box, counting running trials (n_jobs > 1, or one left
        # running by a killed process), or version 1 converged; the engine decides.
        decision = self.decide(study, space, finishing=(trial, state, value))
        done = decision.action == "done" or (self.budget is not None and decision.spent >= self.budget)
        if done:
            try:
                study.stop()
            except RuntimeError:
                pass  # ask-and-tell: there is no optimize loop to stop, and tell must not fail


def _valid(dim: Dim, v: Any) -> bool:
    return v in dim.choices if dim.scale == "categorical" else isinstance(v, (int, float)) and not isinstance(v, bool)


def _nearest(dim: Dim, v: Any) -> Any:
    if dim.scale == "categorical":
        return v if v in dim.choices else dim.choices[0]
    try:
        return dim.snap(v)
    except (TypeError, ValueError):
        return dim.centre()


__all__ = ["FAILED_FOR_GOOD", "LOST", "LOST_RETRIES", "ORPHAN", "PLANNED", "RUN", "CoordinateDescentSampler", "Pick",
           "decide_from_trials", "dim_from_distribution", "distribution_of", "forgiven_losses", "pick", "study_defaults",
           "trial_point", "trial_run", "trials_as_results"]

