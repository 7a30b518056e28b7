"""Hyper-parameter search (docs/tuner.md): noise-aware coordinate descent as an engine-neutral core, an
Optuna sampler, a coordinator with workers, and a Ray searcher with the Ray Tune engine; `pick` reads the result.

The engine and the sampler import no trainer; the training-run side (`run_search`, `tune_study`,
`training_objective`, workers, ...) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .coordinate_descent import CoordinateDescent
from .dims import Dim, distribution_of, point_key
from .optuna import CoordinateDescentSampler, Pick, dim_from_distribution, pick
from .plan import SEARCH_VERSION, SearchPlan
from .trials import FAILED, Decision, Result, TrialTable

_LAZY = {
    "SEARCHES": "run", "find_tuned": "run", "make_sampler": "run", "make_spec": "spec", "open_storage": "storage",
    "open_study": "spec", "retrain_best": "run", "run_search": "run", "training_objective": "run",
    "tune_study": "study", "grid_values": "spaces", "search_space": "spaces",
    "claim_queued": "workers", "coordinate": "workers", "work": "workers", "run_ray_search": "ray_engine",
}

__all__ = ["FAILED", "SEARCH_VERSION", "CoordinateDescent", "CoordinateDescentSampler", "Decision", "Dim", "Pick",
           "Result", "SearchPlan", "TrialTable", "dim_from_distribution", "distribution_of", "pick", "point_key", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
