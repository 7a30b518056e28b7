"""CoordinateDescentSampler: the coordinate-descent core as an Optuna sampler."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, point_key


def dim_from_distribution(name: str, dist: BaseDistribution, step: float | None = None,
                          min_step: float | None = None) -> Dim:
    """suggest_float(log=True) -> log; suggest_int(log=True) -> powers of two; plain -> linear/int; categorical."""
    if isinstance(dist, CategoricalDistribution):
        return Dim(name, "categorical", choices=tuple(dist.choices))
    if isinstance(dist, IntDistribution):
        return Dim(name, "log2-int" if dist.log else "int", dist.low, dist.high, step=step, min_step=min_step)
    if isinstance(dist, FloatDistribution):
        return Dim(name, "log" if dist.log else "linear", dist.low, dist.high, step=step, min_step=min_step)
    raise ValueError(f"{name}: unsupported distribution {dist!r}")


class CoordinateDescentSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler running pmlbal's coordinate descent (SPEC section 5) on define-by-run objectives.

    The start is `x0`, else the centre of each range (geometric for log scales, the first
    choice for categoricals); default steps are x2 on log scales and 1/8 of the range on
    linear ones. Its state is recomputed from the study's trials at every call, so a study
    loaded from storage resumes exactly. A probe that raises is asked for once more (`retries`)
    before it counts as no improvement. Once converged (or after `budget` trials) it stops
    the study, so ``optimize`` ends early and no probe runs twice.

    Examples:
        >>> sampler = CoordinateDescentSampler(x0={"balance": 1.0})
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
    """

    def __init__(self, x0: Mapping[str, Any] | None = None, step: Mapping[str, float] | None = None,
                 min_step: Mapping[str, float] | None = None, tol: float = 0.0, order: Sequence[str] | None = None,
                 seed: int | None = None, budget: int | None = None, retries: int = 1) -> None:
        self.x0, self.step, self.min_step = dict(x0 or {}), dict(step or {}), dict(min_step or {})
        self.tol, self.order, self.budget, self.retries = tol, order, budget, retries
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    # -- Optuna's interface ----------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if not done:
            return {}
        return dict(done[0].distributions)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        decision = self.decide(study, search_space, exclude=trial.number)
        if decision.action == "probe":
            return decision.probes[0]
        if decision.action == "wait":
            # Only when another process runs this study's probes: single-process optimize never
            # leaves a trial running. pmlbal.tune.coordinate is the multi-worker path.
            optuna.logging.get_logger(__name__).warning(
                "coordinate descent is waiting for running trials; trial %d re-evaluates the best point", trial.number)
        return dict(decision.best or {})

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        # First trial (no space known yet), or a parameter the objective only asks for sometimes.
        dim = dim_from_distribution(param_name, param_distribution)
        if param_name in self.x0:
            return self.x0[param_name]
        return dim.centre()

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        # Optuna calls this before the trial's final state reaches storage: pass it in.
        space = self.infer_relative_search_space(study, trial) or dict(trial.distributions)
        if not space or not set(space) <= set(trial.params):
            return
        value = values[0] if state == TrialState.COMPLETE and values else None
        if self.decide(study, space, exclude=trial.number, extra=(trial.params, value)).action == "done":
            study.stop()

    # -- the core ------------------------------------------------------------------------------
    def engine(self, search_space: Mapping[str, BaseDistribution]) -> CoordinateDescent:
        names = list(self.order) if self.order is not None else sorted(search_space)
        dims = [dim_from_distribution(n, search_space[n], self.step.get(n), self.min_step.get(n)) for n in names]
        return CoordinateDescent(dims, self.x0, self.tol, self.budget, names)

    def decide(self, study, search_space, exclude: int | None = None,
               extra: tuple[Mapping[str, Any], float | None] | None = None) -> Decision:
        cd = self.engine(search_space)
        trials = [t for t in study._get_trials(deepcopy=False, use_cache=False) if t.number != exclude]
        return decide_from_trials(cd, trials, study.direction, self.retries, extra)


def trial_point(trial: FrozenTrial) -> dict[str, Any]:
    """The point a trial runs: its params, or for a queued trial the params it was enqueued with."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def decide_from_trials(cd: CoordinateDescent, trials: Sequence[FrozenTrial], direction, retries: int = 1,
                       extra: tuple[Mapping[str, Any], float | None] | None = None) -> Decision:
    """Replay `cd` on a study's trials. Complete trials give values; a pruned point, or one whose
    trials failed (raised or lost with its worker) more than `retries` times, counts as FAILED;
    one that failed fewer times is asked for again (the retry); running and queued trials are
    pending. `extra` is a just-finished trial not yet in storage: (params, value or None)."""
    sign = 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    names = {d.name for d in cd.dims}
    finished: dict[tuple, float] = {}
    failures: dict[tuple, int] = {}
    pending = []

    def add(point, value):
        key = point_key(point, cd.dims)
        if value is None:
            failures[key] = failures.get(key, 0) + 1
        else:
            finished[key] = max(finished.get(key, -math.inf), sign * value)

    for t in trials:
        point = trial_point(t)
        if not names <= set(point):
            continue
        if t.state == TrialState.COMPLETE:
            add(point, t.value)
        elif t.state == TrialState.FAIL:
            add(point, None)
        elif t.state == TrialState.PRUNED:  # a deliberate verdict, not an accident: no retry
            failures[point_key(point, cd.dims)] = retries + 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.append(point)
    if extra is not None:
        add(*extra)
    for key, n in failures.items():
        if key not in finished and n > retries:
            finished[key] = FAILED
    decision = cd.ask(finished, pending)
    if decision.best_value is not None:
        decision.best_value *= sign
    return decision
