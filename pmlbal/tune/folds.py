"""A trial on K class-disjoint validation folds (issue 29): its runs, their seeds and its value.

A trial's value is the mean over its folds of the validation metric, each fold one recorded run
(`TrainConfig.val_fold`) that trains on the train classes outside the fold. The plain mean is the
combination: on one fold every configuration starts from the same untrained network (the seed and
the fold fix it; the tuned coordinates are the loss's and the optimiser's), so a fold's higher floor
adds the same amount to every configuration's mean and cannot reorder them; the gain over the
untrained score is kept beside it (``val_gain``) for the report. The folds' spread is stored too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..config import TrainConfig
from ..metrics.collapse import record_collapse


def fold_configs(cfg: TrainConfig, run: int) -> list[TrainConfig]:
    """The runs of run index `run` of a trial configured as `cfg` (train-sub/val, `cfg.val_folds`
    folds): fold i trains with seed ``cfg.seed + run * K + i``, so every (run, fold) pair has its
    own seed, and one fold (K = 1) keeps the seeds of studies made before folds existed."""
    k = cfg.val_folds
    return [replace(cfg, val_fold=i, seed=cfg.seed + run * k + i) for i in range(k)]


@dataclass(frozen=True)
class FoldScore:
    """A trial's folds: the mean of `values` is the trial's value; `gains` are each fold's value
    less its untrained network's."""

    values: tuple[float, ...]
    gains: tuple[float, ...]
    run_ids: tuple[str, ...]
    #: Each fold run's collapse reason (`pmlbal.metrics.collapse`; None: not collapsed).
    collapsed: tuple[str | None, ...] = ()

    @property
    def value(self) -> float:
        return float(np.mean(self.values))

    @property
    def spread(self) -> float:
        """The folds' standard deviation (0 for one fold)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def attrs(self) -> dict[str, Any]:
        """What the trial stores beside its value (Optuna user attributes)."""
        attrs = {"run_id": self.run_ids[0], "fold_run_ids": list(self.run_ids), "fold_values": list(self.values),
                 "fold_spread": self.spread, "val_gain": float(np.mean(self.gains))}
        reason = next((r for r in self.collapsed if r), None)
        if reason:  # the pick's report refuses to present a collapsed point as a result
            attrs["collapsed"] = reason
        return attrs


def score_folds(records: Sequence[dict[str, Any]], metric: str) -> FoldScore:
    """The `FoldScore` of one trial's fold records (`metric` of their final evaluation)."""
    values = tuple(float(r["final"][metric]) for r in records)
    gains = tuple(v - float((r.get("initial") or {}).get(metric, float("nan"))) for v, r in zip(values, records))
    collapsed = tuple(map(record_collapse, records))
    return FoldScore(values, gains, tuple(str(r["run_id"]) for r in records), collapsed)


def train_trial(cfg: TrainConfig, run: int, metric: str,
                train: Callable[..., dict[str, Any]]) -> FoldScore:
    """Train (or read back, ``reuse=True``) each fold run of run index `run` and score them."""
    return score_folds([train(fold.resolved(), reuse=True) for fold in fold_configs(cfg, run)], metric)
