"""Coordinate descent as a Ray Tune searcher (optional extra: ``pip install 'pmlbal[ray]'``).

Ray brings the placement of trials on the CPUs and GPUs of a cluster; the search itself is the same
engine-neutral core as the Optuna sampler and the coordinator. `TrialEnds` hands each ended trial to the
driver, where `pmlbal tune --engine ray` (`pmlbal.tune.ray_engine`) records it in the study's Optuna storage.
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Mapping, Sequence

try:
    from ray.tune import Callback
    from ray.tune.search import Searcher
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("pmlbal.tune.ray needs Ray Tune: pip install 'pmlbal[ray]'") from err

from .coordinate_descent import CoordinateDescent
from .dims import Dim
# RUN: config key, the run index the trainable adds to its seed; FAILED_FOR_GOOD: result key, a run failed for good
from .trials import FAILED_FOR_GOOD, RUN, Decision, Result


class CoordinateDescentSearcher(Searcher):
    """A `ray.tune.search.Searcher` running pmlbal's coordinate descent (docs/tuner.md).

    With `budget`, version 3 (the defaults, explore, descend, confirm; `seed` fixes the Sobol points and random
    restarts); without, version 1 (one descent from `x0`, ending at convergence). Each config holds
    the point and ``config["run"]``, the run index the trainable adds to its training seed (re-runs
    of the confirm phase have run >= 1). `suggest` returns every probe that may run now (phase 1's
    points, both probes of a coordinate, the confirm re-runs), ``None`` at a barrier while probes
    are still running, and ``Searcher.FINISHED`` once the budget is spent or the descent converged.
    A trial that errors, or reports no `metric`, is tried once more (`retries`) before it counts as
    no improvement; one whose result holds ``FAILED_FOR_GOOD`` (a diverged run: the same seed diverges
    again) counts at once. `add_evaluated_point` adds trials run before (a resumed study: the
    parameters with their ``"run"``). `best_config` is the pick (`TrialTable.pick`: the best
    confirmed point if it beats the defaults on paired runs, else the defaults).

    Examples:
        >>> searcher = CoordinateDescentSearcher([Dim("balance", "log", 1 / 16, 16)], metric="recall@1", mode="max")
        >>> # tune.Tuner(train_fn, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1))
    """

    def __init__(self, dims: Sequence[Dim], metric: str | None = None, mode: str | None = "max",
                 x0: Mapping[str, Any] | None = None, tol: float = 0.0, budget: int | None = None,
                 order: Sequence[str] | None = None, retries: int = 1, seed: int = 0,
                 coupled: Mapping[str, tuple[str, float]] | None = None, noise: float = 0.0) -> None:
        super().__init__(metric=metric, mode=mode)
        self.cd = CoordinateDescent(dims, x0, tol, budget, order, seed, retries, coupled, noise)
        self._live: dict[str, tuple[dict[str, Any], int]] = {}
        self._results: list[tuple[dict[str, Any], int, float | None, bool]] = []  # point, run, value, final

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
        results = [Result(p, run, None if v is None else self._sign() * v, final) for p, run, v, final in self._results]
        decision = self.cd.ask(results, list(self._live.values()))
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
        point, run = dict(decision.probes[0]), decision.runs[0]
        self._live[trial_id] = (point, run)
        return {**point, RUN: run}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self._live.pop(trial_id, None)
        if live is None:
            return
        final = bool(result and not error and result.get(FAILED_FOR_GOOD))
        self._add(live[0], live[1], None if error or not result or final else result.get(self._metric), final)

    def add_evaluated_point(self, parameters: dict, value: float | None, error: bool = False, pruned: bool = False,
                            intermediate_values: list | None = None) -> None:
        """A trial run before this searcher (Ray's warm start): ``parameters`` hold the point and its
        ``"run"``; `error`: it raised (retried once); `pruned`: it failed for good (never retried)."""
        point = {d.name: parameters[d.name] for d in self.cd.dims}
        self._add(point, int(parameters.get(RUN, 0)), None if error or pruned else value, pruned)

    def _add(self, point: dict[str, Any], run: int, value: Any, final: bool) -> None:
        if value is not None and math.isnan(float(value)):
            value = None
        self._results.append((point, run, None if value is None else float(value), final))

    # -- checkpointing (Tuner.restore) ---------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        # Running trials are not kept: after a restore Ray re-runs them, and they are re-suggested.
        return {"results": list(self._results), "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        # A state saved before failures for good were kept holds (point, run, value) triples.
        self._results = [(*r, False) if len(r) == 3 else tuple(r) for r in state["results"]]
        self._metric, self._mode = state["metric"], state["mode"]
        self._live = {}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class TrialEnds(Callback):
    """A Ray Tune callback calling ``record(trial_id, config, result, error)`` in the driver as each trial
    ends: `result` its last result (None if it reported none), `error` None, or the last line of its error
    (a trial that Ray retries itself, `FailureConfig.max_failures`, ends once, after its last try). A
    trial Tune stopped before it reported (left pending when the search ended, or cut short by Ctrl-C)
    has not ended: it is asked for again."""

    def __init__(self, record) -> None:
        self.record = record

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment, for `Tuner.restore`; `record` holds a study and
        # a terminal and need not travel: pmlbal resumes from its study, not from Ray's experiment.
        return {}

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if trial.has_reported_at_least_once:  # else stopped before it reported: pending, or cut by Ctrl-C
            self.record(trial.trial_id, dict(trial.config), trial.last_result, None)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result if trial.has_reported_at_least_once else None
        self.record(trial.trial_id, dict(trial.config), result, _error_line(trial))


def _error_line(trial) -> str:
    """The last line of a failed trial's error (its exception), from the file Ray has just written."""
    text = ""
    try:
        with open(trial.error_file) as f:  # the local copy: the one in storage is written later
            text = f.read().strip()
    except (OSError, TypeError):
        pass
    return text.splitlines()[-1].strip() if text else "the trial failed (Ray kept no error text)"
