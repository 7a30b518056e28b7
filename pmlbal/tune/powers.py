"""Batch sizes stay powers of two under Optuna's own samplers.

A power-of-two coordinate (``log2-int``, e.g. batch size) is asked for as
``IntDistribution(low, high, log=True)`` with power-of-two bounds, the distribution the coordinate
descent sampler reads as "powers of two". TPE and random search draw any integer from it (79, 166),
which is not the grid cd and grid search use, and with m samples per class most such batches cannot
be built (79 is no multiple of 4): the trial fails. `PowersOfTwo` wraps a sampler and rounds such a
draw to the nearest power of two in log scale, so the value the trial records is the value it trains;
the inner sampler draws over a range widened by half a power at each end, so that random search
gives each power of two the same chance.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from .dims import power_exponents


def power_bounds(dist: IntDistribution) -> tuple[int, int]:
    """The powers of two inside [dist.low, dist.high]: (smallest, largest)."""
    lo, hi = power_exponents(dist.low, dist.high)
    return 2**lo, 2**hi


def nearest_power_of_two(value: float, dist: IntDistribution) -> int:
    """2 ** round(log2(value)), kept within the powers of two of [dist.low, dist.high]."""
    lo, hi = power_bounds(dist)
    return int(min(max(2 ** round(math.log2(max(value, 1))), lo), hi))


def widened(dist: IntDistribution) -> IntDistribution:
    """The range the inner sampler draws from: half a power of two (in log scale) beyond each end
    power, so that rounding gives the end powers as much room as the inner ones."""
    lo, hi = power_bounds(dist)
    return IntDistribution(max(1, math.ceil(lo / math.sqrt(2))), math.floor(hi * math.sqrt(2)), log=True)


class PowersOfTwo(optuna.samplers.BaseSampler):
    """`inner`'s draws, with each parameter in `names` (the ``log2-int`` coordinates) drawn over its
    widened range and rounded to a power of two."""

    def __init__(self, inner: optuna.samplers.BaseSampler, names: Iterable[str]) -> None:
        self.inner = inner
        self.names = frozenset(names)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        out = self.inner.sample_relative(study, trial, search_space)
        return {k: nearest_power_of_two(v, search_space[k]) if k in self.names else v for k, v in out.items()}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name not in self.names or not isinstance(param_distribution, IntDistribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)
        value = self.inner.sample_independent(study, trial, param_name, widened(param_distribution))
        return nearest_power_of_two(value, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
