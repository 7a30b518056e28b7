"""Optimiser and learning-rate schedule of a training run: parameter groups with their own rates
(trunk, embedding head, the loss's own parameters), AdamW / Adam / RMSprop, warm-up then cosine,
constant or step decay."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are read by a config's validation and `pmlbal --help`: no torch for them
    import torch

OPTIMIZERS = ("adamw", "adam", "rmsprop")
#: Learning-rate schedules after the linear warm-up: cosine decay to 0 (the harness's own), a
#: constant rate, or a step decay by `lr_gamma` every `lr_step_epochs` epochs (Proxy-Anchor).
SCHEDULES = ("cosine", "constant", "step")
#: Multiplier of `lr` for a loss's own parameters when no rate is given for them: Proxy-Anchor's
#: proxies train at 100 x (tjddus9597/Proxy-Anchor-CVPR2020 code/train.py).
LOSS_LR_FACTOR = 100.0


def param_groups(model: torch.nn.Module, loss_fn: torch.nn.Module, lr: float, head_lr: float | None = None,
                 loss_lr: float | None = None) -> list[dict[str, Any]]:
    """Named groups: trunk (`model.backbone`) at `lr`, head (`model.head`) at `head_lr` (default `lr`),
    the loss's own parameters at `loss_lr` (default LOSS_LR_FACTOR x `lr`); parameters that need
    no gradient (frozen BatchNorm) and empty groups are left out."""
    groups = [
        {"name": "trunk", "params": list(model.backbone.parameters()), "lr": lr},
        {"name": "head", "params": list(model.head.parameters()), "lr": head_lr or lr},
        {"name": "loss", "params": list(loss_fn.parameters()), "lr": loss_lr or LOSS_LR_FACTOR * lr},
    ]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    return [g for g in groups if g["params"]]


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """`name` (one of OPTIMIZERS) over `groups`; RMSprop with momentum 0.9, as both powerful-benchmarker's
    config_optimizers/default.yaml and Proxy-Anchor's code/train.py set it."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def make_schedule(opt: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int,
                  warmup_epochs: float, lr_step_epochs: int = 10, lr_gamma: float = 0.5):
    """Linear warm-up over `warmup_epochs`, then `schedule`: cosine decay to 0 at the last step,
    constant, or x `lr_gamma` every `lr_step_epochs` epochs (stepped per batch, counted in epochs,
    as a StepLR stepped at each epoch's end)."""
    import torch

    warm = max(1, int(warmup_epochs * steps_per_epoch))
    if schedule == "cosine":
        total = epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
        )
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")

    def factor(s: int) -> float:
        if s < warm and warmup_epochs > 0:
            return (s + 1) / warm
        return lr_gamma ** ((s // steps_per_epoch) // lr_step_epochs) if schedule == "step" else 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
