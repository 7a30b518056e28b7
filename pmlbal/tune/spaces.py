"""Default search spaces: a loss's ranges and a data set's (batch size, lr), both from the registry."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import optuna

from ..registry import dataset_spec, loss_tuning
from .dims import Dim, distribution_of, powers_of_two


def _dim(name: str, entry: tuple) -> Dim:
    scale, low, high, *steps = entry
    return Dim(name, scale, low, high, step=steps[0] if steps else None, min_step=steps[1] if len(steps) > 1 else None)


def search_space(loss_name: str, dataset: str = "digits", overrides: dict[str, tuple] | None = None) -> list[Dim]:
    """The default coordinates for tuning `loss_name` on `dataset`, read from the registry: the
    loss's own ranges, then the data set's (batch size, lr); `overrides` maps a name to (low, high)."""
    loss_dims = loss_tuning(loss_name)  # ValueError: "no default search space for ..."
    train_dims = dataset_spec(dataset).tune
    dims = [_dim(n, e) for n, e in {**loss_dims, **train_dims}.items()]
    # The sweep's order (docs/tuner.md, "Coordinates"): balance and batch size first, the mission's two,
    # then the loss's own (temperature, margins, kernel scale), then lr.
    first = {"balance": 0, "batch_size": 1, "lr": 3}
    dims.sort(key=lambda d: first.get(d.name, 2))
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
    """Ask Optuna for `dim` with its distribution (`dims.distribution_of`, the one mapping)."""
    dist = distribution_of(dim)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(dim.name, list(dist.choices))
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(dim.name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(dim.name, dist.low, dist.high, step=dist.step, log=dist.log)


def grid_values(dim: Dim) -> list[Any]:
    """A grid per coordinate: powers of two on log scales, 9 points on linear ones (every integer
    when an integer range has 9 or fewer)."""
    if dim.scale == "categorical":
        return list(dim.choices)
    if dim.scale in ("log", "log2-int"):
        vals = powers_of_two(dim.low, dim.high)
        return [int(v) for v in vals] if dim.scale == "log2-int" else vals
    n = 9
    if dim.scale == "int" and dim.high - dim.low + 1 <= n:
        return list(range(int(dim.low), int(dim.high) + 1))
    vals = [dim.low + (dim.high - dim.low) * i / (n - 1) for i in range(n)]
    return sorted({int(round(v)) for v in vals}) if dim.scale == "int" else vals


def default_point(loss: str, dims: Sequence[Dim], loss_kwargs: Mapping[str, Any], batch_size: int,
                  lr: float, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults a study starts from and compares its pick with: each coordinate's value in `given`,
    else the run's own (`loss_kwargs`, `batch_size`, `lr`: what the user would train without tuning),
    else the loss class's default argument; snapped onto the box. A coordinate with none of those is an
    error naming it. A power-of-two coordinate keeps a whole default inside its bounds (`Dim.keep`)."""
    import inspect

    from ..registry import get

    params = inspect.signature(get(loss, "loss")).parameters
    point: dict[str, Any] = {}
    for d in dims:
        if given and d.name in given:
            v = given[d.name]
        elif d.name in loss_kwargs:
            v = loss_kwargs[d.name]
        elif d.name in ("batch_size", "lr"):
            v = batch_size if d.name == "batch_size" else lr
        elif d.name in params and params[d.name].default is not inspect.Parameter.empty:
            v = params[d.name].default
        else:
            raise ValueError(f"no default for coordinate {d.name!r} of {loss}: give it with --x0 {d.name}=VALUE")
        point[d.name] = d.keep(v)
    unknown = set(given or {}) - {d.name for d in dims}
    if unknown:
        raise ValueError(f"--x0 names {sorted(unknown)}, not coordinates of the space {[d.name for d in dims]}")
    return point
