"""Coordinate descent as a Ray Tune searcher (optional extra: ``pip install 'pmlbal[ray]'``).

Ray brings GPU placement across a cluster, schedulers such as ASHA and experiment restore; the
search itself is the same engine-neutral core as the Optuna sampler and the coordinator.
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Mapping, Sequence

try:
    from ray.tune.search import Searcher
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("pmlbal.tune.ray needs Ray Tune: pip install 'pmlbal[ray]'") from err

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, point_key


class CoordinateDescentSearcher(Searcher):
    """A `ray.tune.search.Searcher` running pmlbal's coordinate descent (SPEC section 5).

    `suggest` returns the probes of the current coordinate (both at once, so Ray runs them in
    parallel), ``None`` at the coordinate barrier while probes are still running, and
    ``Searcher.FINISHED`` once converged or after `budget` points. A trial that errors, or
    reports no `metric`, is tried once more (`retries`) before it counts as no improvement.

    Examples:
        >>> searcher = CoordinateDescentSearcher([Dim("balance", "log", 1 / 16, 16)], metric="recall@1", mode="max")
        >>> # tune.Tuner(train_fn, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1))
    """

    def __init__(self, dims: Sequence[Dim], metric: str | None = None, mode: str | None = "max",
                 x0: Mapping[str, Any] | None = None, tol: float = 0.0, budget: int | None = None,
                 order: Sequence[str] | None = None, retries: int = 1) -> None:
        super().__init__(metric=metric, mode=mode)
        self.cd = CoordinateDescent(dims, x0, tol, budget, order)
        self.retries = retries
        self._live: dict[str, dict[str, Any]] = {}
        self._values: dict[tuple, float] = {}
        self._failures: dict[tuple, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        # The space comes from `dims`; only metric and mode may be given through Tune.
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    # -- the core --------------------------------------------------------------------------
    def _sign(self) -> float:
        return -1.0 if self._mode == "min" else 1.0

    def decide(self) -> Decision:
        finished = {k: self._sign() * v for k, v in self._values.items()}
        for key, n in self._failures.items():
            if key not in finished and n > self.retries:
                finished[key] = FAILED
        decision = self.cd.ask(finished, list(self._live.values()))
        if decision.best_value is not None:
            decision.best_value *= self._sign()
        return decision

    @property
    def best_config(self) -> dict[str, Any] | None:
        return self.decide().best

    # -- Ray's interface -----------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        decision = self.decide()
        if decision.action == "done":
            return Searcher.FINISHED
        if decision.action == "wait":
            return None
        point = dict(decision.probes[0])
        self._live[trial_id] = point
        return dict(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        point = self._live.pop(trial_id, None)
        if point is None:
            return
        key = point_key(point, self.cd.dims)
        value = None if error or not result else result.get(self._metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self._failures[key] = self._failures.get(key, 0) + 1
        else:
            best = self._values.get(key)
            better = best is None or self._sign() * float(value) > self._sign() * best
            self._values[key] = float(value) if better else best

    # -- checkpointing (Tuner.restore) ---------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        # Running trials are not kept: after a restore Ray re-runs them, and they are re-suggested.
        return {"values": dict(self._values), "failures": dict(self._failures), "metric": self._metric,
                "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._values, self._failures = dict(state["values"]), dict(state["failures"])
        self._metric, self._mode = state["metric"], state["mode"]
        self._live = {}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
