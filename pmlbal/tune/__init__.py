"""Hyper-parameter search: coordinate descent (engine-neutral core, Optuna sampler)."""

from .coordinate_descent import FAILED, CoordinateDescent, Decision, Dim, point_key
from .optuna import CoordinateDescentSampler, dim_from_distribution

__all__ = ["FAILED", "CoordinateDescent", "CoordinateDescentSampler", "Decision", "Dim", "dim_from_distribution",
           "point_key"]
