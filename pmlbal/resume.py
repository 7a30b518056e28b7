"""Mid-run checkpoints: `train` saves one at the end of every epoch, `train(resume=True)` continues from it.

A checkpoint holds everything the rest of a run depends on: the model, loss, optimiser and scheduler
states, the batch source's state, every random generator the run draws from (the augmentation
generator, torch's global one and the CUDA one in use, numpy's and Python's global ones) and the
record collected so far. A run killed after epoch k therefore resumes at epoch k+1 and ends with the
same record as a run never interrupted (timing fields and the run id aside). It lives next to the
records, as DIR/runs/<dataset>-<loss>-<config key>-s<seed>.ckpt: the run's identity, so the same
command finds it again, and it is removed once the record is written.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_path, describe_load_error
from .records import run_key

#: Bump when the checkpoint layout changes; an older file is then refused by name, not misread.
FORMAT = 1


@dataclass
class Progress:
    """What a run has done so far: the parts of its record that grow epoch by epoch."""

    epoch: int = 0
    initial: dict[str, float] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    train_time: float = 0.0
    images_seen: int = 0
    #: Wall-clock seconds spent by earlier, interrupted sessions of this run.
    elapsed: float = 0.0


def checkpoint_path(cfg) -> Path:
    """Where the run of (resolved) `cfg` keeps its checkpoint: its identity, without a random part."""
    return Path(cfg.results_dir, "runs", f"{run_name(cfg)}.ckpt")


def run_name(cfg) -> str:
    """`<dataset>-<loss>-<config key>-s<seed>`: the same for every session of one run."""
    return f"{cfg.dataset}-{cfg.loss}-{run_key(cfg)}-s{cfg.seed}"


def save_run_state(path: Path, run, progress: Progress, elapsed: float) -> None:
    """Write the checkpoint of `run` after `progress.epoch` epochs atomically (temp file, fsync, rename).

    `elapsed`: wall seconds of the run so far, this session included."""
    steps = [{k: float(v) for k, v in s.items()} for s in progress.steps]  # one host sync per epoch
    progress.steps = steps  # and the floats are kept: earlier epochs are not converted again
    state = {
        "format": FORMAT,
        "config": asdict(run.cfg),
        "config_key": run_key(run.cfg),
        "progress": {**asdict(progress), "elapsed": elapsed},
        "model": run.model.state_dict(),
        "loss": run.loss_fn.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "batches": run.batches.state_dict() if hasattr(run.batches, "state_dict") else None,
        "rng": _rng_states(run),
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as err:  # torch.save re-raises a full disk as RuntimeError
        import gc

        # The error's traceback holds torch.save's frames, and they its writer, whose open file keeps the
        # removed temp file's space taken: the record written next would find the disk full too.
        seen, link = set(), err
        while link is not None and id(link) not in seen:  # torch re-raises inside its writer's __exit__: a chain
            seen.add(id(link))
            link.__traceback__ = None
            link = link.__context__ or link.__cause__
        gc.collect()
        raise CheckpointWriteError(path, _state_bytes(state), err) from None


class CheckpointWriteError(OSError):
    """The epoch checkpoint could not be written (a full disk, a folder gone read-only): the message
    names the file, the space it needs and the space free; the previous checkpoint is untouched."""

    def __init__(self, path: Path, needed: int, cause: BaseException, note: str = "") -> None:
        import shutil

        try:
            free_bytes = shutil.disk_usage(path.parent).free
            free = f"{free_bytes / 1e6:.0f} MB free there"
        except OSError:
            free_bytes, free = None, "free space unknown"
        reason = str(getattr(cause, "strerror", None) or cause).splitlines()[0]
        if "enforce fail" in reason or "unexpected pos" in reason:  # torch's words for a write cut short
            full = free_bytes is not None and free_bytes < needed
            reason = "No space left on device" if full else "the write was cut short"
        kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
        super().__init__(f"cannot write the run checkpoint {path} ({reason}): it needs about {needed / 1e6:.0f} MB, "
                         f"{free}; {kept}" + (f"; {note}" if note else ""))
        self.path, self.needed, self.cause = path, needed, cause


def _state_bytes(value) -> int:
    """Bytes of the tensors in a checkpoint state (what torch.save writes, give or take its index)."""
    if torch.is_tensor(value):
        return value.element_size() * value.numel()
    if isinstance(value, dict):
        return sum(_state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_state_bytes(v) for v in value)
    return 0


def load_run_state(path: Path, run) -> Progress:
    """Restore `run` (freshly built from the same configuration) to the end of the checkpoint's epoch;
    return the progress recorded so far. ValueError names the file when it cannot be used."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and torch errors share no base class
        raise ValueError(f"{path} is not a readable pmlbal run checkpoint ({describe_load_error(err, path)}); "
                         f"start the run afresh with `pmlbal train --fresh` (or remove it)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"{path}: checkpoint format {found!r}, expected {FORMAT}; remove it to start afresh")
    if state["config_key"] != run_key(run.cfg) or state["config"]["seed"] != run.cfg.seed:
        raise ValueError(f"{path} is the checkpoint of another configuration; remove it to start afresh")
    run.model.load_state_dict(state["model"])
    run.loss_fn.load_state_dict(state["loss"])
    run.opt.load_state_dict(state["optimizer"])
    if run.sched is not None:
        run.sched.load_state_dict(state["scheduler"])
    if state["batches"] is not None:
        run.batches.load_state_dict(state["batches"])
    _set_rng_states(run, state["rng"])
    return Progress(**state["progress"])


def _rng_states(run) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "augment": run.gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if run.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(run.device)
    return states


def _set_rng_states(run, states: dict[str, Any]) -> None:
    run.gen.set_state(states["augment"])
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(states["python"])
    if run.device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], run.device)
