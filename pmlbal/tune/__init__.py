"""Hyper-parameter search: coordinate descent (engine-neutral core, Optuna sampler)."""

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, point_key
from .optuna import CoordinateDescentSampler, dim_from_distribution

__all__ = ["FAILED", "CoordinateDescent", "CoordinateDescentSampler", "Decision", "Dim", "dim_from_distribution",
           "point_key"]

from .run import SEARCHES, make_sampler, run_search, training_objective  # noqa: E402
from .spaces import grid_values, search_space  # noqa: E402

__all__ += ["SEARCHES", "grid_values", "make_sampler", "run_search", "search_space", "training_objective"]
