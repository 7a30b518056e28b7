"""Hyper-parameter search: coordinate descent (engine-neutral core, Optuna sampler, coordinator and workers)."""

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, point_key
from .optuna import CoordinateDescentSampler, dim_from_distribution

__all__ = ["FAILED", "CoordinateDescent", "CoordinateDescentSampler", "Decision", "Dim", "dim_from_distribution",
           "point_key"]

from .run import (SEARCHES, find_tuned, make_sampler, make_spec, open_storage, open_study, retrain_best,  # noqa: E402
                  run_search, training_objective)
from .spaces import grid_values, search_space  # noqa: E402
from .workers import claim_queued, coordinate, work  # noqa: E402

__all__ += ["SEARCHES", "claim_queued", "coordinate", "find_tuned", "grid_values", "make_sampler", "make_spec",
            "open_storage", "open_study", "retrain_best", "run_search", "search_space", "training_objective", "work"]
