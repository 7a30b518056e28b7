"""Run a search over training runs with Optuna storage: cd, tpe, random or grid."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import optuna

from ..train import TrainConfig, train
from .coordinate_descent import Dim
from .optuna import CoordinateDescentSampler
from .spaces import grid_values, samples_per_class, suggest

SEARCHES = ("cd", "tpe", "random", "grid")


def make_sampler(search: str, dims: list[Dim], seed: int = 0, budget: int | None = None) -> optuna.samplers.BaseSampler:
    if search == "cd":
        return CoordinateDescentSampler(order=[d.name for d in dims], seed=seed, budget=budget)
    if search == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if search == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search == "grid":
        return optuna.samplers.GridSampler({d.name: grid_values(d) for d in dims}, seed=seed)
    raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")


def training_objective(base: TrainConfig, loss: str, dims: list[Dim], metric: str = "recall@1") -> Callable:
    """Each trial: one training run on the class-disjoint validation split, scored by `metric`."""
    loss_names = {d.name for d in dims} - {"batch_size", "lr"}

    def objective(trial: optuna.Trial) -> float:
        values = {d.name: suggest(trial, d) for d in dims}
        cfg = replace(
            base, loss=loss, loss_kwargs={k: values[k] for k in sorted(loss_names)},
            batch_size=values.get("batch_size", base.batch_size), lr=values.get("lr", base.lr),
            train_split="train-sub", eval_split="val", progress=False,
        )
        if "batch_size" in values:
            cfg = replace(cfg, samples_per_class=samples_per_class(base.dataset, values["batch_size"]))
        record = train(cfg)
        trial.set_user_attr("run_id", record["run_id"])
        return record["final"][metric]

    return objective


def run_search(objective: Callable, dims: list[Dim], search: str, budget: int, storage: str | None,
               study_name: str, seed: int = 0, direction: str = "maximize") -> optuna.Study:
    """Create or resume `study_name` in `storage` and run trials until `budget` trials exist (or CD stops)."""
    sampler = make_sampler(search, dims, seed, budget if search == "cd" else None)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, sampler=sampler,
                                load_if_exists=True)
    study.set_user_attr("search", search)
    remaining = budget - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=(RuntimeError, ValueError))
    return study
