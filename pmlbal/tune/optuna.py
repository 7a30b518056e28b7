"""CoordinateDescentSampler: the coordinate-descent core as an Optuna sampler."""

from __future__ import annotations

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
    loaded from storage resumes exactly. Once converged (or after `budget` trials) it stops
    the study, so ``optimize`` ends early and no probe runs twice.

    Examples:
        >>> sampler = CoordinateDescentSampler(x0={"balance": 1.0})
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
    """

    def __init__(self, x0: Mapping[str, Any] | None = None, step: Mapping[str, float] | None = None,
                 min_step: Mapping[str, float] | None = None, tol: float = 0.0, order: Sequence[str] | None = None,
                 seed: int | None = None, budget: int | None = None) -> None:
        self.x0, self.step, self.min_step = dict(x0 or {}), dict(step or {}), dict(min_step or {})
        self.tol, self.order, self.budget = tol, order, budget
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
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        finished: dict[tuple, float] = {}
        running = []
        for t in study._get_trials(deepcopy=False, use_cache=False):
            if t.number == exclude or not set(search_space) <= set(t.params):
                continue
            key = point_key(t.params, cd.dims)
            if t.state == TrialState.COMPLETE:
                finished[key] = sign * t.value
            elif t.state in (TrialState.FAIL, TrialState.PRUNED):
                finished.setdefault(key, FAILED)
            elif t.state == TrialState.RUNNING:
                running.append(t.params)
        if extra is not None:
            params, value = extra
            finished[point_key(params, cd.dims)] = FAILED if value is None else sign * value
        decision = cd.ask(finished, running)
        if decision.best_value is not None:
            decision.best_value *= sign
        return decision
