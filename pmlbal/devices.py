"""Where a run computes: the device a `--device` value names, and the process group under torchrun."""

from __future__ import annotations

import os

import torch

from .config import TrainConfig

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_device(device: str) -> str:
    """`device` if it names a device kind pmlbal runs on (auto|cpu|cuda|cuda:N|mps), else ValueError."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"device must be {DEVICE_HELP}, got {device!r}")
    return device


def pick_device(device: str) -> torch.device:
    check_device(device)
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available")
    if device.startswith("cuda:") and torch.cuda.is_available() and int(device[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size): (0, 1) normally; under `torchrun` (WORLD_SIZE > 1) the process group is
    initialised once, with the backend the run's device needs (NCCL for CUDA, gloo for the CPU,
    also on a machine that has CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    from .distributed import process_group_backend

    if not dist.is_initialized():
        dist.init_process_group(process_group_backend(device))
    return dist.get_rank(), dist.get_world_size()


def run_device(cfg: TrainConfig, rank: int, world: int) -> torch.device:
    device = pick_device(cfg.device)
    if world > 1:
        if cfg.batch_size % world:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({world})")
        if cfg.sampler not in ("m-per-class", "random"):  # both draw the same global batches on every rank
            raise ValueError(f"--sampler {cfg.sampler} is not supported under torchrun; use m-per-class or random")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
    return device
