"""Batch sizes stay powers of two under Optuna's own samplers.

A power-of-two coordinate (``log2-int``, e.g. batch size) is asked for as
``IntDistribution(low, high, log=True)`` with power-of-two bounds, the distribution the coordinate
descent sampler reads as "powers of two". TPE and random search draw any integer from it (79, 166),
which is not the grid cd and grid search use, and with m samples per class most such batches cannot
be built (79 is no multiple of 4): the trial fails. `PowersOfTwo` wraps a sampler and rounds such a
draw to the nearest power of two in log scale, so the value the trial records is the value it trains.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState


def is_power_of_two_range(dist: BaseDistribution) -> bool:
    """An integer log distribution whose bounds are powers of two (a ``log2-int`` coordinate)."""
    return (isinstance(dist, IntDistribution) and dist.log
            and all(v > 0 and (v & (v - 1)) == 0 for v in (dist.low, dist.high)))


def nearest_power_of_two(value: float, dist: IntDistribution) -> int:
    """2 ** round(log2(value)), kept within [dist.low, dist.high]."""
    v = 2 ** round(math.log2(max(value, 1)))
    return int(min(max(v, dist.low), dist.high))


class PowersOfTwo(optuna.samplers.BaseSampler):
    """`inner`'s draws, with every power-of-two coordinate rounded to a power of two."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        out = self.inner.sample_relative(study, trial, search_space)
        return {k: nearest_power_of_two(v, search_space[k]) if is_power_of_two_range(search_space[k]) else v
                for k, v in out.items()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return nearest_power_of_two(value, param_distribution) if is_power_of_two_range(param_distribution) else value

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
