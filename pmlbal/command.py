"""The `pmlbal train` command line that reproduces a configuration."""

from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Any

from .config import NOT_IN_COMMAND, TrainConfig, fill_defaults
from .protocols import protocol_values
from .registry import dataset_spec

__all__ = ["NOT_IN_COMMAND", "command_baseline", "command_for", "implied_train_split"]


def implied_train_split(eval_split: str) -> str:
    """The CLI's training split for an evaluation split: validation runs train on train-sub."""
    return "train-sub" if eval_split == "val" else "train"


def command_baseline(dataset: str, protocol: str | None = None) -> dict[str, Any]:
    """What `pmlbal train --dataset DATASET [--protocol NAME]` trains with before any other flag."""
    values = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    fill_defaults(values, dataset_spec(dataset).defaults)
    if protocol is not None:
        values.update(protocol_values(protocol, dataset))
    return values


def command_for(cfg: TrainConfig) -> str:
    """The `pmlbal train` command line that reproduces `cfg` (`--protocol` and the flags that differ from it)."""
    parts = ["pmlbal", "train", "--dataset", cfg.dataset, "--loss", cfg.loss]
    if cfg.protocol is not None:
        parts += ["--protocol", cfg.protocol]
    for k, v in sorted(cfg.loss_kwargs.items()):
        parts += ["--loss-arg", f"{k}={v}"]
    base = command_baseline(cfg.dataset, cfg.protocol)
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
