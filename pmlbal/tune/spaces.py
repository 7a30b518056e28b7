"""Default search spaces: a loss's ranges and a data set's (batch size, lr), both from the registry."""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..registry import dataset_spec, loss_tuning
from .coordinate_descent import Dim


def _dim(name: str, entry: tuple) -> Dim:
    scale, low, high, *steps = entry
    return Dim(name, scale, low, high, step=steps[0] if steps else None, min_step=steps[1] if len(steps) > 1 else None)


def search_space(loss_name: str, dataset: str = "digits", overrides: dict[str, tuple] | None = None) -> list[Dim]:
    """The default coordinates for tuning `loss_name` on `dataset`, read from the registry: the
    loss's own ranges, then the data set's (batch size, lr); `overrides` maps a name to (low, high)."""
    loss_dims = loss_tuning(loss_name)  # ValueError: "no default search space for ..."
    train_dims = dataset_spec(dataset).tune
    dims = [_dim(n, e) for n, e in {**loss_dims, **train_dims}.items()]
    out = []
    for d in dims:
        if overrides and d.name in overrides:
            low, high = overrides[d.name]
            d = Dim(d.name, d.scale, low, high, step=d.step, min_step=d.min_step)
        out.append(d)
    unknown = set(overrides or {}) - {d.name for d in dims}
    if unknown:
        raise ValueError(f"cannot override {sorted(unknown)}: not in the space {[d.name for d in dims]}")
    return out


def samples_per_class(dataset: str, batch_size: int) -> int:
    """m for a tuned batch size: the data set's rule."""
    return dataset_spec(dataset).samples_per_class(batch_size)


def final_samples_per_class(dataset: str, batch_size: int) -> int:
    """m for the final run of a tuned batch size, on the full train split: the data set's rule for
    that split (`pmlbal.registry.DatasetSpec.final_samples_per_class`), which keeps the classes a
    batch of a default run holds where the tuning split has fewer classes (digits, Fashion-MNIST)."""
    return dataset_spec(dataset).final_samples_per_class(batch_size)


def suggest(trial: optuna.Trial, dim: Dim) -> Any:
    """Ask Optuna for `dim` with the distribution that maps back to the same scale."""
    if dim.scale == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if dim.scale in ("log2-int", "log-int"):
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=True)
    if dim.scale == "int":
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high))
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.scale == "log")


def grid_values(dim: Dim) -> list[Any]:
    """A grid per coordinate: powers of two on log scales, 9 points on linear ones (every integer
    when an integer range has 9 or fewer)."""
    if dim.scale == "categorical":
        return list(dim.choices)
    if dim.scale in ("log", "log2-int"):
        lo, hi = math.ceil(math.log2(dim.low) - 1e-9), math.floor(math.log2(dim.high) + 1e-9)
        vals = [2.0**e for e in range(lo, hi + 1)]
        return [int(v) for v in vals] if dim.scale == "log2-int" else vals
    n = 9
    if dim.scale == "int" and dim.high - dim.low + 1 <= n:
        return list(range(int(dim.low), int(dim.high) + 1))
    vals = [dim.low + (dim.high - dim.low) * i / (n - 1) for i in range(n)]
    return sorted({int(round(v)) for v in vals}) if dim.scale == "int" else vals
