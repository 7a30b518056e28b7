"""The inner loop: one optimisation step, one epoch over the batch source, the divergence check."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from .build import Run
from .config import TrainConfig
from .data.gpu_batches import normalize, random_resized_crop_flip
from .evaluation import embed

class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the run stopped there (`epoch`, `step` within it)."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


def train_step(forward, loss_fn, opt, x: torch.Tensor, y: torch.Tensor, amp: bool,
               before_step: Callable[[], None] | None = None) -> torch.Tensor:
    """One optimisation step; bf16 autocast and channels-last when `amp` (CUDA), loss in fp32.
    `before_step` runs between backward and the optimiser step (gradient clipping, frozen trunk)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        z = forward(x.contiguous(memory_format=torch.channels_last) if amp else x)
    loss = loss_fn(z.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if before_step is not None:
        before_step()
    opt.step()
    return loss


def _before_step(run: Run, epoch: int) -> Callable[[], None] | None:
    """What runs between backward and step this epoch: a frozen trunk drops its gradients (the
    optimiser then skips it, weight decay and moments included, as Proxy-Anchor's requires_grad=False
    does, and DDP's hooks stay valid), then gradients are clipped by value."""
    frozen = epoch <= run.cfg.freeze_trunk_epochs
    clip = run.cfg.clip_grad_value
    if not frozen and clip is None:
        return None
    params = [p for g in run.opt.param_groups for p in g["params"]]

    def before_step() -> None:
        if frozen:
            for p in run.trunk_params:
                p.grad = None
        if clip is not None:
            torch.nn.utils.clip_grad_value_([p for p in params if p.grad is not None], clip)

    return before_step


def train_epoch(run: Run, epoch: int, bar=None) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]], float, int]:
    """One epoch: (its log entry, per-step losses and terms as device tensors, seconds, images seen)."""
    cfg = run.cfg
    batches = run.batches.epoch(epoch, lambda: embed(run.model, run.train_bank, cfg.input_size, run.device,
                                                     amp=run.amp, augment=run.gen, flip=cfg.hflip))
    run.model.train()
    before_step = _before_step(run, epoch)
    steps, t0, checked = [], time.perf_counter(), 0
    for idx in batches:
        if run.world > 1:  # every rank draws the same global batch and takes its own slice
            idx = np.array_split(idx, run.world)[run.rank]
        x, y = _batch(run, torch.from_numpy(idx))
        loss = train_step(run.forward, run.train_loss, run.opt, x, y, run.amp, before_step)
        run.sched.step()
        step = {"loss": loss.detach()}
        for term in ("pos_term", "entropy_term"):
            if hasattr(run.loss_fn, term):
                step[term] = torch.as_tensor(getattr(run.loss_fn, term)).detach()
        steps.append(step)
        if bar is not None:
            bar.update(1)
        # A host sync per step would stall the GPU's queue: there the check runs every 20 steps,
        # naming the first bad step all the same.
        if not run.amp or len(steps) % 20 == 0:
            checked = _check_finite(steps, checked, epoch, run)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    _check_finite(steps, checked, epoch, run)
    seconds = time.perf_counter() - t0
    entry = {"epoch": epoch, "train_loss": float(torch.stack([s["loss"] for s in steps]).mean()),
             "lr": run.sched.get_last_lr()[0]}
    return entry, steps, seconds, len(batches) * cfg.batch_size


def _batch(run: Run, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A step's inputs: metric learning, one augmented crop of each image and its label; self-supervised
    (`run.views`), two views of each image, all first views then all second views, and no labels."""
    cfg, images = run.cfg, run.train_bank.take(idx)
    if run.views is not None:
        return normalize(torch.cat([run.views(images), run.views(images)]), run.model.mean, run.model.std), None
    labels = run.train_set.labels if run.loss_labels is None else run.loss_labels
    x = normalize(random_resized_crop_flip(images, cfg.input_size, run.gen, scale=(cfg.crop_scale, 1.0),
                                           valid=run.train_bank.take_boxes(idx), flip=cfg.hflip),
                  run.model.mean, run.model.std)
    return x, torch.as_tensor(labels[idx.numpy()], device=run.device)


def epoch_line(cfg: TrainConfig, entry: dict[str, Any], seconds: float, rank: int = 0, world: int = 1) -> str:
    """One epoch as a log line: run, epoch of epochs, mean training loss, seconds."""
    where = f" [rank {rank}/{world}]" if world > 1 else ""
    return (f"{cfg.dataset}/{cfg.loss} seed {cfg.seed}{where}: epoch {entry['epoch']}/{cfg.epochs}: "
            f"loss {entry['train_loss']:.4f}, {seconds:.1f} s")


def _check_finite(steps: list[dict[str, torch.Tensor]], start: int, epoch: int, run: Run) -> int:
    """Raise `DivergedError` at the first non-finite loss of steps[start:]; else the steps checked."""
    if start >= len(steps):
        return start
    losses = torch.stack([s["loss"] for s in steps[start:]])
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        i = start + int(bad.nonzero()[0, 0])
        lr = run.opt.param_groups[0]["lr"]
        raise DivergedError(f"training diverged: loss {float(steps[i]['loss'])} at epoch {epoch}, step {i + 1} "
                            f"(learning rate {lr:.3g} at that step, lr {run.cfg.lr:g}); lower the learning rate",
                            epoch, i + 1)
    return len(steps)
