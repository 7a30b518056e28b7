"""Record assembly: what a finished (or diverged) run writes, with where and with what it ran."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .build import Run
from .command import command_for
from .cpu import fingerprint
from .records import NUMERICS_VERSION, SCHEMA_VERSION, run_key, new_run_id
from .untrained import pixel_metrics

def run_record(run: Run, epochs: list[dict], steps: list[dict], initial: dict, final: dict,
               wall_time: float, train_time: float, images_seen: int) -> dict[str, Any]:
    """The run's record (`pmlbal.records` schema), not yet written."""
    cfg, device = run.cfg, run.device
    cfg_dict = asdict(cfg)
    return dict(
        epochs=epochs,
        # One host sync for all logged steps, at the end, not one per step.
        steps=[{k: float(v) for k, v in s.items()} for s in steps],
        world_size=run.world,
        schema=SCHEMA_VERSION,
        run_id=new_run_id(cfg_dict, run_key(cfg)),
        config=cfg_dict,
        config_key=run_key(cfg),
        seed=cfg.seed,
        command=command_for(cfg),
        initial=initial,
        final=final,
        pixels=pixel_metrics(run) if run.rank == 0 else None,
        wall_time_s=wall_time,
        train_time_s=train_time,
        images_per_s=images_seen / train_time if train_time else None,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        numerics=numerics(device),
        versions=_versions(),
        git_commit=_git_commit(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def failure_record(run: Run, err: Exception, epochs: list[dict], wall_time: float,
                   status: str = "diverged") -> dict[str, Any]:
    """The record of a stopped run: what it was, where it stopped and its epochs so far (never a board
    row: the leaderboard reads DIR/runs/ only). A diverged run's goes under DIR/failed/, which bench
    skips; a run stopped by its surroundings (a checkpoint that could not be written, `status`
    "interrupted") under DIR/interrupted/."""
    cfg = run.cfg
    cfg_dict = asdict(cfg)
    return dict(schema=SCHEMA_VERSION, status=status, error=str(err), epoch=getattr(err, "epoch", None),
                step=getattr(err, "step", None),
                run_id=new_run_id(cfg_dict, run_key(cfg)), config=cfg_dict,
                config_key=run_key(cfg), seed=cfg.seed, numerics=numerics(run.device),
                command=command_for(cfg), epochs=epochs, wall_time_s=wall_time, versions=_versions(),
                git_commit=_git_commit(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def numerics(device: torch.device) -> dict[str, Any]:
    """What fixes a run's rounding besides its configuration: the code's numerics version, the CPU
    thread count (1 and 2 threads give runs that drift apart after a few hundred steps), the device
    type and the CPU's fingerprint (`pmlbal.cpu`: model, vector ISA, caches, BLAS/oneDNN builds; another
    CPU model rounds differently from the first step on). Equal numerics reproduce a record exactly."""
    return {"version": NUMERICS_VERSION, "threads": torch.get_num_threads(), "device": device.type,
            "cpu": fingerprint()}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    """The versions of what computes a run (numpy and Pillow prepare its images)."""
    import numpy
    import PIL
    import pytorch_metric_learning
    import timm

    from . import __version__

    return {"pmlbal": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}
