"""The `pmlbal train` command line that reproduces a configuration."""

from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Any

from .config import NOT_IN_COMMAND, TrainConfig, fill_defaults, resolve_task
from .protocols import protocol_values
from .registry import dataset_spec

__all__ = ["NOT_IN_COMMAND", "command_baseline", "command_for", "implied_train_split"]


def implied_train_split(eval_split: str) -> str:
    """The CLI's training split for an evaluation split: validation runs train on train-sub, the
    classification protocol's test split (``--task ssl``) comes with its train split."""
    return {"val": "train-sub", "cls-test": "cls-train"}.get(eval_split, "train")


def command_baseline(dataset: str, protocol: str | None = None, task: str = "metric") -> dict[str, Any]:
    """What `pmlbal train --dataset DATASET [--protocol NAME] [--task TASK]` trains with before any other flag
    (the task's own defaults too: a self-supervised run's splits, batches and evaluated features)."""
    values = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    spec = dataset_spec(dataset)
    fill_defaults(values, spec.defaults)
    if protocol is not None:
        values.update(protocol_values(protocol, dataset))
    values["task"] = task
    resolve_task(values, spec.ssl_views)
    values["task"] = TrainConfig().task  # `--task` itself is a flag of the command
    return values


def command_for(cfg: TrainConfig) -> str:
    """The `pmlbal train` command line that reproduces `cfg` (`--protocol` and the flags that differ from it)."""
    parts = ["pmlbal", "train", "--dataset", cfg.dataset, "--loss", cfg.loss]
    if cfg.protocol is not None:
        parts += ["--protocol", cfg.protocol]
    for k, v in sorted(cfg.loss_kwargs.items()):
        parts += ["--loss-arg", f"{k}={v}"]
    base = command_baseline(cfg.dataset, cfg.protocol, cfg.task)
    base["train_split"] = implied_train_split(cfg.eval_split)
    for f in fields(TrainConfig):
        if f.name in NOT_IN_COMMAND:
            continue
        v, d = getattr(cfg, f.name), base[f.name]
        if v == d or (v is None and d is None):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "freeze_bn" and v == "stats":
            parts += ["--freeze-bn-stats"]
        elif isinstance(v, bool):
            parts += [flag if v else "--no-" + f.name.replace("_", "-")]
        else:
            parts += [flag, "none" if v is None else str(v)]
    return " ".join(shlex.quote(p) for p in parts)
