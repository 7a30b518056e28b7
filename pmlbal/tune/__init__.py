"""Hyper-parameter search: noise-aware coordinate descent (SPEC section 5 v2) as an engine-neutral
core, an Optuna sampler, a coordinator with workers and a Ray searcher; `pick` reads the result."""

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, Result, point_key
from .optuna import CoordinateDescentSampler, Pick, dim_from_distribution, distribution_of, pick

__all__ = ["FAILED", "CoordinateDescent", "CoordinateDescentSampler", "Decision", "Dim", "Pick", "Result",
           "dim_from_distribution", "distribution_of", "pick", "point_key"]

from .run import (SEARCHES, find_tuned, make_sampler, make_spec, open_storage, open_study, retrain_best,  # noqa: E402
                  run_search, training_objective)
from .spaces import grid_values, search_space  # noqa: E402
from .workers import claim_queued, coordinate, work  # noqa: E402

__all__ += ["SEARCHES", "claim_queued", "coordinate", "find_tuned", "grid_values", "make_sampler", "make_spec",
            "open_storage", "open_study", "retrain_best", "run_search", "search_space", "training_objective", "work"]
