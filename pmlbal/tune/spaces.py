"""Default search spaces per loss (balance + its temperature/margins/kernel scale, batch size, lr)."""

from __future__ import annotations

import math
from typing import Any

import optuna

from .coordinate_descent import Dim

_LOSS_DIMS: dict[str, list[Dim]] = {
    "BalancedNTXentLoss": [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)],
    "BalancedSupConLoss": [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)],
    "BalancedContrastiveLoss": [Dim("balance", "log", 1 / 16, 16), Dim("pos_margin", "linear", 0.0, 0.8, step=0.1, min_step=0.025),
                                Dim("neg_margin", "linear", 0.2, 1.8, step=0.1, min_step=0.025)],
    "DHELLoss": [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)],
    "KCLLoss": [Dim("balance", "log", 1.0, 256.0), Dim("t", "log", 0.25, 16.0)],
    "AlphaCLLoss": [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 2.0)],
    "NTXentLoss": [Dim("temperature", "log", 1 / 64, 1.0)],
    "SupConLoss": [Dim("temperature", "log", 1 / 64, 1.0)],
    "ContrastiveLoss": [Dim("pos_margin", "linear", 0.0, 0.8, step=0.1, min_step=0.025),
                        Dim("neg_margin", "linear", 0.2, 1.8, step=0.1, min_step=0.025)],
}

#: Batch-size range and lr range per data set; digits' validation half has 3 classes, so its
#: batches are 2 classes x batch/2 samples (other sets: batch/4 classes x 4 samples).
_TRAIN_DIMS: dict[str, list[Dim]] = {
    "digits": [Dim("batch_size", "log2-int", 8, 64), Dim("lr", "log", 1e-4, 1e-2)],
    "cub": [Dim("batch_size", "log2-int", 32, 512), Dim("lr", "log", 1e-5, 1e-3)],
    "cars": [Dim("batch_size", "log2-int", 32, 512), Dim("lr", "log", 1e-5, 1e-3)],
    "sop": [Dim("batch_size", "log2-int", 32, 512), Dim("lr", "log", 1e-5, 1e-3)],
}


def search_space(loss_name: str, dataset: str = "digits", overrides: dict[str, tuple] | None = None) -> list[Dim]:
    """The default coordinates for tuning `loss_name` on `dataset`; `overrides` maps a name to (low, high)."""
    if loss_name not in _LOSS_DIMS:
        raise ValueError(f"no default search space for {loss_name!r}; known: {', '.join(sorted(_LOSS_DIMS))}")
    if dataset not in _TRAIN_DIMS:
        raise ValueError(f"unknown data set {dataset!r}; choose from {sorted(_TRAIN_DIMS)}")
    dims = _LOSS_DIMS[loss_name] + _TRAIN_DIMS[dataset]
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
    return batch_size // 2 if dataset == "digits" else 4


def suggest(trial: optuna.Trial, dim: Dim) -> Any:
    """Ask Optuna for `dim` with the distribution that maps back to the same scale."""
    if dim.scale == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if dim.scale == "log2-int":
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
