"""One training run -> one result record (SPEC sections 6-7; issue: benchmark harness)."""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import data as data_mod
from .checkpoints import evaluate_checkpoint, load_checkpoint, save_checkpoint  # noqa: F401  (public names)
from .data.cache import CACHE_MODES, load_or_build, load_or_build_aspect
from .data.gpu_batches import ImageBank, center_crop_resize, normalize, random_resized_crop_flip
from .metrics import embedding_geometry, retrieval_metrics
from .models import HEAD_INITS, POOLINGS, EmbeddingModel, check_backbone_name
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule, param_groups
from .records import (SCHEMA_VERSION, check_writable, config_key, find_existing, find_failed, new_run_id,
                      replace_record, run_lock, write_record)
from .registry import RegistryView, dataset_spec, get, list_batch_sources, list_datasets
from .samplers.batches import batches_per_epoch, check_classes_per_batch, class_balanced_batches  # noqa: F401
from .untrained import pixel_metrics, untrained_metrics

#: Per-data-set training defaults: a view of what each data set registers (`pmlbal.registry`).
DATASET_DEFAULTS = RegistryView(list_datasets, lambda name: dict(dataset_spec(name).defaults))

EVAL_ON = ("head", "backbone")
LEAD_METRICS = ("recall@1", "map_at_r", "r_precision", "precision_at_1")


@dataclass
class TrainConfig:
    """Everything one run depends on. `None` fields take the data set's defaults."""

    dataset: str = "digits"
    loss: str = "BalancedNTXentLoss"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    backbone: str | None = None
    embedding_dim: int | None = None
    pretrained: str | None = None
    freeze_bn: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    samples_per_class: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    cache_size: int | None = None
    input_size: int | None = None
    crop_scale: float | None = None
    #: Random horizontal flips of training crops (None: the data set's default, True unless it says
    #: otherwise; glyphs are not flipped).
    hflip: bool | None = None
    train_split: str = "train"
    eval_split: str = "test"
    eval_every: int = 0
    sampler: str = "m-per-class"
    resample_every: int = 1
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    results_dir: str = "results"
    cache_dir: str | None = None
    progress: bool = True
    #: "storage-url#study" when the hyper-parameters come from a tuning study (provenance only).
    tuned_from: str | None = None
    #: Validation runs behind the tuned pick (SPEC section 5: its score is their mean).
    tuned_runs: int | None = None
    #: Also save the trained model (weights + this config) to DIR/models/<run_id>.pt, for `pmlbal eval`.
    save_model: bool = False
    # Recipe options (published protocols, `pmlbal.protocols`); each default is the harness as it was,
    # so records made before they existed keep their identity.
    #: The preset the values came from (`pmlbal.protocols`): provenance, shown on the board.
    protocol: str | None = None
    #: avg | max | avg+max (GAP + GMP summed, Proxy-Anchor) of the backbone's last feature map.
    pooling: str = "avg"
    #: default | kaiming (Proxy-Anchor's embedding initialisation).
    head_init: str = "default"
    #: The embedding head's learning rate (None: `lr`).
    head_lr: float | None = None
    #: The loss's own parameters' learning rate, e.g. proxies (None: `pmlbal.optim.LOSS_LR_FACTOR` x `lr`).
    loss_lr: float | None = None
    optimizer: str = "adamw"
    schedule: str = "cosine"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    #: The first N epochs train only the head and the loss's parameters (Proxy-Anchor's --warm).
    freeze_trunk_epochs: int = 0
    #: Clip every gradient element to [-v, v] before the step (None: no clipping).
    clip_grad_value: float | None = None
    #: Training cache: square (centre square, as before) | aspect (whole image, `pmlbal.data.cache`).
    cache_mode: str = "square"
    #: Evaluate the head's embeddings or the pooled backbone output before the head.
    eval_on: str = "head"
    #: k > 1: k models on class-disjoint folds of the train classes, each leaving one fold out;
    #: test embeddings are the k models' concatenated (MLRC).
    cv_folds: int = 0
    #: The metric that picks the best epoch (the board reports the final one first).
    lead_metric: str = "recall@1"

    def resolved(self) -> "TrainConfig":
        """A copy with data-set defaults filled in and every value checked."""
        spec = dataset_spec(self.dataset)  # ValueError naming the known data sets
        values = asdict(self)
        fill_defaults(values, spec.defaults)
        if self.samples_per_class is None and self.train_split == "train-sub":
            # train-sub holds fewer classes than train (3 of 5 on digits and Fashion-MNIST), too few
            # for the default batch's P classes: take m from the data set's tuning rule instead.
            values["samples_per_class"] = spec.samples_per_class(values["batch_size"])
        cfg = TrainConfig(**values)
        for name in ("epochs", "batch_size", "samples_per_class", "embedding_dim", "cache_size", "input_size"):
            if int(getattr(cfg, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.samples_per_class < 2:
            raise ValueError(f"samples_per_class must be >= 2 (positives are needed), got {cfg.samples_per_class}")
        if cfg.batch_size % cfg.samples_per_class:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) must be a multiple of samples_per_class ({cfg.samples_per_class})"
            )
        if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
        if cfg.input_size > cfg.cache_size:
            raise ValueError(f"input_size ({cfg.input_size}) cannot exceed cache_size ({cfg.cache_size})")
        if cfg.sampler not in list_batch_sources():
            raise ValueError(f"sampler must be one of {', '.join(list_batch_sources())}, got {cfg.sampler!r}")
        if cfg.resample_every < 1:
            raise ValueError(f"resample_every must be >= 1, got {cfg.resample_every}")
        if cfg.train_split not in ("train", "train-sub") or cfg.eval_split not in ("val", "test"):
            raise ValueError("train_split must be train|train-sub and eval_split val|test")
        cfg._check_recipe()
        return cfg

    def _check_recipe(self) -> None:
        check_backbone_name(self.backbone)
        choices = {"pooling": POOLINGS, "head_init": HEAD_INITS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "cache_mode": CACHE_MODES, "eval_on": EVAL_ON, "lead_metric": LEAD_METRICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.protocol is not None:
            from .protocols import get_protocol

            get_protocol(self.protocol)
        for name in ("head_lr", "loss_lr", "clip_grad_value"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.freeze_trunk_epochs < 0:
            raise ValueError(f"weight_decay, warmup_epochs and freeze_trunk_epochs must be >= 0, got "
                             f"{self.weight_decay}, {self.warmup_epochs}, {self.freeze_trunk_epochs}")
        if self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_step_epochs must be >= 1 and lr_gamma in (0, 1], got {self.lr_step_epochs}, "
                             f"{self.lr_gamma}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(f"cv_folds must be 0 (off) or >= 2, got {self.cv_folds}")
        if self.cv_folds and self.save_model:
            raise ValueError("save_model keeps one model; a cv_folds run trains several")


def fill_defaults(values: dict[str, Any], dataset_defaults: Mapping[str, Any]) -> None:
    """Fill the config fields left at None in `values`: the data set's defaults, then the harness's."""
    for k, v in dataset_defaults.items():
        if values.get(k) is None:
            values[k] = v
    if values.get("hflip") is None:
        values["hflip"] = True


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the run stopped there (`epoch`, `step` within it)."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


class MetricsError(ValueError):
    """Evaluation gave NaN metrics (the message names the cause): nothing to record."""


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that make a run distinct: those off the dataclass default (so adding an
    option with a default keeps the identity, and the resumability, of earlier records)."""
    defaults = TrainConfig()
    keep = {"dataset", "loss", "loss_kwargs", "seed"}
    return {k: v for k, v in asdict(cfg).items()
            if k in keep or (v != getattr(defaults, k) and not (k in IDENTITY_NEUTRAL and v == IDENTITY_NEUTRAL[k]))}


#: Fields added after records existed whose resolved value here is what every earlier run did: left out
#: of the identity at that value, so earlier records keep their key.
IDENTITY_NEUTRAL = {"hflip": True}


def make_loss(name: str, **kwargs: Any) -> torch.nn.Module:
    """A loss by registered name: pmlbal's, or any of PML's own (the baselines)."""
    from .registry import create

    try:
        get(name, kind="loss")
    except ValueError:
        from .registry import list_losses

        raise ValueError(
            f"unknown loss {name!r}; pmlbal losses: {', '.join(list_losses())}; or any PML loss class name"
        ) from None
    return create(name, **kwargs)


#: Constructor arguments the harness fills from the data and the model when a loss takes them and
#: they are not given (PML's proxy and classifier losses: ProxyAnchorLoss, ArcFaceLoss, ...).
DATA_LOSS_ARGS = ("num_classes", "embedding_size")


def loss_data_args(name: str, kwargs: dict[str, Any], num_classes: int, embedding_size: int) -> dict[str, Any]:
    """`kwargs` plus `num_classes` (training classes) and `embedding_size` where the loss's
    constructor takes them and `kwargs` leaves them out. They never enter the config, so a run's
    identity stays its user-given arguments."""
    import inspect

    try:
        params = inspect.signature(get(name, kind="loss").__init__).parameters
    except ValueError:
        return dict(kwargs)  # unknown names fail in make_loss with the full list
    known = {"num_classes": num_classes, "embedding_size": embedding_size}
    return {**{k: v for k, v in known.items() if k in params and k not in kwargs}, **kwargs}


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


@torch.no_grad()
def embed(model: EmbeddingModel, bank: ImageBank, input_size: int, device: torch.device,
          batch_size: int = 256, amp: bool = False, augment: torch.Generator | None = None,
          on: str = "head", flip: bool = True) -> torch.Tensor:
    """L2-normalised fp32 embeddings of the whole bank: centre crops, or training augmentations with
    `augment` (flipped at random unless `flip` is False); of the head's output, or with ``on="backbone"`` of the pooled backbone output."""
    model.eval()
    out = []
    for i in range(0, len(bank), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(bank)))
        images = bank.take(idx)
        if augment is None:
            x = center_crop_resize(images, input_size)
        else:
            x = random_resized_crop_flip(images, input_size, augment, valid=bank.take_boxes(idx), flip=flip)
        x = normalize(x, model.mean, model.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            x = x.contiguous(memory_format=torch.channels_last) if amp else x
            z = model(x) if on == "head" else model.features(x)
        out.append(torch.nn.functional.normalize(z.float(), dim=1))
    return torch.cat(out)


def evaluate(model, bank, labels, cfg: TrainConfig, device) -> dict[str, float]:
    """Retrieval metrics at the data set's standard Ks, and embedding geometry. `model` may be a
    list of models (cross-validation folds): their L2-normalised embeddings are concatenated and
    scaled by 1/sqrt(k), so cosine similarity is the mean of the models' (MLRC's ConcatenateEmbeddings)."""
    models = model if isinstance(model, (list, tuple)) else [model]
    zs = [embed(m, bank, cfg.input_size, device, amp=device.type == "cuda", on=cfg.eval_on) for m in models]
    z = zs[0] if len(zs) == 1 else torch.cat(zs, dim=1) / math.sqrt(len(zs))
    y = torch.as_tensor(labels, device=z.device)
    ks = tuple(k for k in dataset_spec(cfg.dataset).ks if k < len(y))
    metrics = retrieval_metrics(z, y, ks=ks, device=device)
    metrics.update(embedding_geometry(z, labels=y))
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v))
    if bad:
        if not torch.isfinite(z).all():
            cause = "the model's embeddings are not finite"
        elif not check_retrievable(labels):
            cause = "no image has another image of its class to retrieve"
        else:
            cause = "unknown cause"
        raise MetricsError(f"evaluation on {cfg.dataset}/{cfg.eval_split} gave NaN {', '.join(bad)}: {cause}")
    return metrics


#: TrainConfig fields no command line carries: where things go and provenance, not what is trained.
NOT_IN_COMMAND = ("dataset", "loss", "loss_kwargs", "progress", "results_dir", "cache_dir", "tuned_from", "tuned_runs",
                  "save_model", "protocol")


def implied_train_split(eval_split: str) -> str:
    """The CLI's training split for an evaluation split: validation runs train on train-sub."""
    return "train-sub" if eval_split == "val" else "train"


def command_baseline(dataset: str, protocol: str | None = None) -> dict[str, Any]:
    """What `pmlbal train --dataset DATASET [--protocol NAME]` trains with before any other flag."""
    from .protocols import protocol_values

    values = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    fill_defaults(values, dataset_spec(dataset).defaults)
    if protocol is not None:
        values.update(protocol_values(protocol, dataset))
    return values


def check_retrievable(labels: np.ndarray) -> bool:
    """Whether some class has two images, so that a query can retrieve one of its own class."""
    return bool(len(labels)) and int(np.unique(np.asarray(labels), return_counts=True)[1].max()) >= 2


def check_splits(train_labels: np.ndarray, eval_labels: np.ndarray, cfg: TrainConfig) -> None:
    """Refuse, before any training, splits on which the run would be degenerate: m above the
    largest training class (every class slot repeats images), or an evaluation split where no
    image has another of its class (every metric NaN)."""
    sizes = np.unique(np.asarray(train_labels), return_counts=True)[1]
    if cfg.samples_per_class > sizes.max():
        raise ValueError(
            f"samples_per_class ({cfg.samples_per_class}) is above the largest class of {cfg.dataset}/{cfg.train_split} "
            f"({sizes.max()} images; smallest {sizes.min()}): every class would repeat images in a batch")
    if cfg.samples_per_class > sizes.min():
        # Not refused: on SOP (classes of 2 to 12 images) m = 4 is the standard recipe, and PML's
        # MPerClassSampler then repeats images of the small classes (under different augmentations).
        import warnings

        warnings.warn(f"{int((sizes < cfg.samples_per_class).sum())} of {len(sizes)} classes of "
                      f"{cfg.dataset}/{cfg.train_split} have fewer than samples_per_class ({cfg.samples_per_class}) "
                      f"images (smallest {sizes.min()}): their images repeat within a batch", stacklevel=2)
    if not check_retrievable(eval_labels):
        raise ValueError(f"{cfg.dataset}/{cfg.eval_split}: every class has a single image, so no query has a "
                         f"same-class reference and every retrieval metric would be NaN")


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
        if isinstance(v, bool):
            parts += [flag if v else "--no-" + f.name.replace("_", "-")]
        else:
            parts += [flag, "none" if v is None else str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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


# -- one training run, in parts ------------------------------------------------------------------------
@dataclass
class Run:
    """A built training run: resolved config, where it runs, its data, model, loss and optimiser."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    gen: torch.Generator  # training augmentations (and spectral re-embeddings)
    train_set: Any
    eval_set: Any
    train_bank: ImageBank
    eval_bank: ImageBank
    model: EmbeddingModel
    forward: Callable  # the model, DDP-wrapped and compiled as asked
    loss_fn: torch.nn.Module
    train_loss: Callable  # the loss, wrapped to see the global batch under torchrun
    opt: torch.optim.Optimizer
    sched: Any
    batches: Any  # the batch source (`pmlbal.samplers.batches`)
    #: Training labels as the loss sees them: 0..C-1 in class order (proxy losses index by label).
    loss_labels: np.ndarray | None = None
    #: The backbone's trainable parameters (those `freeze_trunk_epochs` holds still).
    trunk_params: list = field(default_factory=list)
    fold: int | None = None

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.eval_bank, self.eval_set.labels, self.cfg, self.device)


def _run_device(cfg: TrainConfig, rank: int, world: int) -> torch.device:
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


def fold_mask(labels: np.ndarray, folds: int, fold: int) -> np.ndarray:
    """The samples a cross-validation model trains on: every class outside `fold` of `folds`
    contiguous, class-disjoint parts of the classes (powerful-benchmarker's training partitions)."""
    held_out = np.array_split(np.unique(labels), folds)[fold]
    return ~np.isin(labels, held_out)


def build_run(config: TrainConfig, fold: int | None = None) -> Run:
    """Resolve `config`, set up the process (torchrun), data, model, loss, optimiser and batch
    source; with `fold`, on the train classes outside that cross-validation fold. Seeds the global
    torch generator (the model's initialisation): call it inside `torch.random.fork_rng` to keep
    the caller's state, as `train` does."""
    cfg = config.resolved()
    if cfg.cv_folds and fold is None or fold is not None and not 0 <= fold < cfg.cv_folds:
        raise ValueError(f"fold must be in 0..{cfg.cv_folds - 1} for cv_folds={cfg.cv_folds}, got {fold}")
    rank, world = distributed_context(pick_device(cfg.device))
    device = _run_device(cfg, rank, world)
    torch.manual_seed(cfg.seed)  # the same initial model on every rank
    # Rank 0 draws the augmentations a single process would; other ranks their own stream.
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * rank)

    train_set = data_mod.create(cfg.dataset, cfg.root, cfg.train_split)
    eval_set = data_mod.create(cfg.dataset, cfg.root, cfg.eval_split)
    check_splits(train_set.labels, eval_set.labels, cfg)  # before any decoding or training
    if cfg.cache_mode == "aspect":
        images, boxes = load_or_build_aspect(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress)
    else:
        images, boxes = load_or_build(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), None
    if fold is not None:
        keep = fold_mask(train_set.labels, cfg.cv_folds, fold)
        train_set.paths = [p for p, k in zip(train_set.paths, keep) if k]
        train_set.labels = train_set.labels[keep]
        images, boxes = images[keep], None if boxes is None else boxes[keep]
    train_bank = ImageBank(images, device, boxes)
    eval_bank = ImageBank(load_or_build(eval_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), device)
    loss_labels = np.unique(train_set.labels, return_inverse=True)[1].reshape(-1)
    # A loss with parameters (Proxy-Anchor's proxies) draws them from a fork of the seeded generator,
    # so every loss of one seed starts from the same network: paired comparisons, one untrained row.
    with torch.random.fork_rng(devices=[]):
        loss_fn = make_loss(cfg.loss, **loss_data_args(cfg.loss, cfg.loss_kwargs, int(loss_labels.max()) + 1,
                                                       cfg.embedding_dim))
    if hasattr(loss_fn, "check_finite"):
        # The trainer checks every loss itself (`DivergedError`, naming epoch and step), without a
        # host sync per step on a GPU; non-finite embeddings show there as a non-finite loss.
        loss_fn.check_finite = False

    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, cfg.pretrained, cfg.freeze_bn, cfg.pooling,
                           cfg.head_init).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    forward, train_loss = model, loss_fn
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from .distributed import DistributedLoss

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_loss = DistributedLoss(loss_fn)  # the loss sees the global batch; its own parameters stay in sync
    forward = torch.compile(forward) if cfg.compile else forward
    opt = make_optimizer(cfg.optimizer, param_groups(model, loss_fn, cfg.lr, cfg.head_lr, cfg.loss_lr), cfg.lr,
                         cfg.weight_decay)
    # Built before any training step: a batch/class mismatch fails here, not after the first epoch.
    batches = get(cfg.sampler, kind="batches")(train_set.labels, cfg.batch_size, cfg.samples_per_class,
                                               seed=cfg.seed, resample_every=cfg.resample_every)
    sched = make_schedule(opt, cfg.schedule, cfg.epochs, batches_per_epoch(len(train_set), cfg.batch_size),
                          cfg.warmup_epochs, cfg.lr_step_epochs, cfg.lr_gamma)
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    return Run(cfg, rank, world, device, gen, train_set, eval_set, train_bank, eval_bank, model, forward, loss_fn,
               train_loss, opt, sched, batches, loss_labels, trunk, fold)


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
    labels = run.train_set.labels if run.loss_labels is None else run.loss_labels
    steps, t0, checked = [], time.perf_counter(), 0
    for idx in batches:
        if run.world > 1:  # every rank draws the same global batch and takes its own slice
            idx = np.array_split(idx, run.world)[run.rank]
        idx_t = torch.from_numpy(idx)
        x = normalize(random_resized_crop_flip(run.train_bank.take(idx_t), cfg.input_size, run.gen,
                                               scale=(cfg.crop_scale, 1.0), valid=run.train_bank.take_boxes(idx_t),
                                               flip=cfg.hflip),
                      run.model.mean, run.model.std)
        y = torch.as_tensor(labels[idx], device=run.device)
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
        run_id=new_run_id(cfg_dict, config_key(identity(cfg))),
        config=cfg_dict,
        config_key=config_key(identity(cfg)),
        seed=cfg.seed,
        command=command_for(cfg),
        initial=initial,
        final=final,
        pixels=pixel_metrics(run) if run.rank == 0 else None,
        wall_time_s=wall_time,
        train_time_s=train_time,
        images_per_s=images_seen / train_time if train_time else None,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        versions=_versions(),
        git_commit=_git_commit(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def train(config: TrainConfig, on_epoch: Callable[[dict], None] | None = None, *, resume: bool = False,
          tensorboard: str | Path | None = None, log: Callable[[str], None] | None = None,
          reuse: bool = False) -> dict[str, Any] | None:
    """Train `config.backbone` with `config.loss`, evaluate, write and return the run record.

    build_run -> evaluate the untrained model -> train_epoch x epochs -> evaluate -> run_record ->
    write. With `config.progress`, a tqdm bar on a terminal and, on every process, one
    `epoch_line` per epoch on stdout (a log or a pipe gets these lines instead of silence). The
    caller's global torch, numpy and Python generators are left as they were. Under `torchrun`
    each process trains on its slice of every global batch (`batch_size` is the global size),
    gradients are averaged by DistributedDataParallel and the loss, wrapped in PML's
    DistributedLossWrapper (`distributed.DistributedLoss`, which also averages the gradients of the
    loss's own parameters), sees the whole global batch; rank 0 evaluates and writes the record
    and returns it, the other ranks return None.

    A single-process run saves a checkpoint at the end of every epoch but the last
    (`pmlbal.resume.checkpoint_path`) and removes it once the record is written; with `resume` a run
    whose checkpoint exists continues after the checkpoint's epoch and ends with the record an
    uninterrupted run would have written (timing fields aside). `tensorboard`: also log the loss and
    its terms per step, the metrics per evaluation and the configuration as hparams to
    TENSORBOARD/<run name> (needs the `tensorboard` extra). `log` receives notes such as "resuming".

    One run per configuration and seed: the run holds a lock file (`pmlbal.records.run_lock`;
    `RunLockedError` if another live process trains it) and its record replaces any earlier one
    (``record["replaced"]``, when there was one); with `reuse`, an existing record is returned (``record["reused"]``)
    instead of training, and a recorded divergence is raised again. A non-finite loss stops the run
    with `DivergedError` (epoch and step), recorded under DIR/failed/. The results folder is checked
    writable before any work; a record that cannot be written is kept in the temp folder.
    """
    cfg = config.resolved()
    board = None
    if tensorboard is not None:
        from .tensorboard_log import TensorBoardLog

        board = TensorBoardLog(tensorboard)  # fails here, before any work, if the package is missing
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(config, on_epoch, resume, board, log)
    # Fail before any work: a folder that cannot be written, or a run another process is training.
    check_writable(Path(cfg.results_dir) / "runs")
    if cfg.save_model:
        check_writable(Path(cfg.results_dir) / "models")
    key = config_key(identity(cfg))
    with run_lock(cfg.results_dir, key, cfg.seed):
        if reuse:
            done = find_existing(cfg.results_dir, key, cfg.seed)
            if done is not None:
                return {**done, "reused": True}
            failed = find_failed(cfg.results_dir, key, cfg.seed)
            if failed is not None:
                raise DivergedError(f"{failed['error']} (recorded in {failed['path']})", failed.get("epoch"),
                                    failed.get("step"))
        return _train(config, on_epoch, resume, board, log)


def _train(config: TrainConfig, on_epoch: Callable[[dict], None] | None, resume: bool, board,
           log: Callable[[str], None] | None) -> dict[str, Any] | None:
    import random

    from tqdm.auto import tqdm

    from .resume import Progress, checkpoint_path, load_run_state, run_name, save_run_state

    # The device this process will use (its LOCAL_RANK under torchrun), without touching the others.
    cuda = [int(os.environ.get("LOCAL_RANK", 0))] if torch.cuda.is_available() else []
    host_rngs = np.random.get_state(), random.getstate()  # a resumed run sets them to the checkpoint's
    try:
        if config.resolved().cv_folds:
            if board is not None:
                raise ValueError("TensorBoard logging is for single-model runs, not cv_folds")
            with torch.random.fork_rng(devices=cuda):
                return _train_folds(config, on_epoch, log if resume else None)
        with torch.random.fork_rng(devices=cuda):
            run = build_run(config)
            cfg, t_start = run.cfg, time.perf_counter()
            ckpt = checkpoint_path(cfg) if run.world == 1 else None
            if resume and ckpt is None and log and run.rank == 0:
                log("no resuming under torchrun (checkpoints are single-process): the run starts from epoch 1")
            if resume and ckpt is not None and ckpt.exists():
                done = load_run_state(ckpt, run)
                if log:
                    log(f"resuming {ckpt} at epoch {done.epoch + 1}/{cfg.epochs}")
            else:
                if ckpt is not None and ckpt.exists() and log:
                    log(f"{ckpt} holds an interrupted run of this configuration; starting afresh (resume continues it)")
                done = Progress(initial=untrained_metrics(run) if run.rank == 0 else None)
            steps_per_epoch = batches_per_epoch(len(run.train_set), cfg.batch_size)
            if board is not None and run.rank == 0:
                board.open(run_name(cfg), done.initial, start_step=done.epoch * steps_per_epoch)
            bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=done.epoch * steps_per_epoch,
                       desc=f"{cfg.dataset}/{cfg.loss} seed {cfg.seed}", disable=None if cfg.progress else True,
                       leave=False)
            try:
                for epoch in range(done.epoch + 1, cfg.epochs + 1):
                    entry, epoch_steps, seconds, images = train_epoch(run, epoch, bar)
                    done.steps += epoch_steps
                    done.train_time += seconds
                    done.images_seen += images
                    if run.rank == 0 and cfg.eval_every and epoch % cfg.eval_every == 0 and epoch != cfg.epochs:
                        entry["metrics"] = run.evaluate()
                    done.epochs.append(entry)
                    done.epoch = epoch
                    if cfg.progress:  # above the bar on a terminal; the only sign of life in a log
                        tqdm.write(epoch_line(cfg, entry, seconds, run.rank, run.world), file=sys.stdout)
                        sys.stdout.flush()  # a pipe or file is block-buffered: the line must arrive now
                    if board is not None and run.rank == 0:
                        board.epoch(entry, epoch_steps, first_step=(epoch - 1) * steps_per_epoch)
                    if ckpt is not None and epoch != cfg.epochs:  # after the last one the record follows at once
                        save_run_state(ckpt, run, done, done.elapsed + time.perf_counter() - t_start)
                    if on_epoch:
                        on_epoch(entry)
            except DivergedError as err:
                bar.close()
                if ckpt is not None:  # resuming would only diverge again
                    ckpt.unlink(missing_ok=True)
                if run.rank == 0:
                    path = _record_failure(run, err, done.epochs, done.elapsed + time.perf_counter() - t_start)
                    raise DivergedError(f"{err} (recorded in {path})", err.epoch, err.step) from None
                raise
            bar.close()
            if run.rank != 0:
                return None  # rank 0 evaluates and writes the one record of the run
            final = run.evaluate()
            done.epochs[-1]["metrics"] = final
            record = run_record(run, done.epochs, done.steps, done.initial, final,
                                done.elapsed + time.perf_counter() - t_start, done.train_time, done.images_seen)
            best = best_epoch(done.epochs, cfg.lead_metric)
            if best is not None:
                record["best"] = best
            if cfg.save_model:
                record["model_path"] = str(save_checkpoint(run.model, cfg, record["run_id"]))
            _store(record, cfg.results_dir)
            if ckpt is not None:
                ckpt.unlink(missing_ok=True)
            if board is not None:
                board.close(cfg, final, cfg.epochs * steps_per_epoch)
            return record
    finally:
        np.random.set_state(host_rngs[0])
        random.setstate(host_rngs[1])
        if board is not None:
            board.close_quietly()


def _train_folds(config: TrainConfig, on_epoch: Callable[[dict], None] | None,
                 log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """`train` for `cv_folds` = k: k models, model i on the train classes outside fold i, one after
    the other (no checkpoints: a resumed cross-validation run starts again), then one evaluation of
    their concatenated embeddings; each epoch entry names its fold."""
    from tqdm.auto import tqdm

    cfg, t_start = config.resolved(), time.perf_counter()
    if log:
        log("cross-validation runs keep no checkpoint: the run starts from fold 0, epoch 1")
    epochs, steps, train_time, images_seen, models, initial = [], [], 0.0, 0, [], None
    for fold in range(cfg.cv_folds):
        run = build_run(config, fold)  # seeded alike: every fold starts from the same network
        if initial is None and run.rank == 0:
            initial = untrained_metrics(run)
        total = cfg.epochs * batches_per_epoch(len(run.train_set), cfg.batch_size)
        bar = tqdm(total=total, desc=f"{cfg.dataset}/{cfg.loss} seed {cfg.seed} fold {fold}",
                   disable=None if cfg.progress else True, leave=False)
        for epoch in range(1, cfg.epochs + 1):
            entry, epoch_steps, seconds, images = train_epoch(run, epoch, bar)
            entry["fold"] = fold
            steps += epoch_steps
            train_time += seconds
            images_seen += images
            if run.rank == 0 and cfg.eval_every and epoch % cfg.eval_every == 0:
                entry["metrics"] = run.evaluate()  # this fold's model alone, one of k
            epochs.append(entry)
            if on_epoch:
                on_epoch(entry)
        bar.close()
        models.append(run.model)
    if run.rank != 0:
        return None
    final = evaluate(models, run.eval_bank, run.eval_set.labels, cfg, run.device)
    record = run_record(run, epochs, steps, initial, final, time.perf_counter() - t_start, train_time, images_seen)
    return _store(record, cfg.results_dir)


def best_epoch(epochs: list[dict[str, Any]], metric: str = "recall@1") -> dict[str, Any] | None:
    """The epoch with the highest `metric` among those evaluated on the whole model (cross-validation
    folds' own evaluations excluded), as {"epoch", "metric", "metrics"}; None unless two or more
    epochs were evaluated (then the final epoch is all there is)."""
    scored = [e for e in epochs if "metrics" in e and "fold" not in e and metric in e["metrics"]]
    if len(scored) < 2:
        return None
    top = max(scored, key=lambda e: (e["metrics"][metric], -e["epoch"]))  # the first of equals, as references keep it
    return {"epoch": top["epoch"], "metric": metric, "metrics": top["metrics"]}


def _store(record: dict[str, Any], results_dir: str) -> dict[str, Any]:
    """Write `record` as its configuration and seed's one record; add its "path" and, when it replaced
    earlier records, their paths as "replaced" (returned to the caller, not written)."""
    path, replaced = replace_record(record, results_dir)
    record["path"] = str(path)
    if replaced:
        record["replaced"] = [str(p) for p in replaced]
    return record


def _record_failure(run: Run, err: DivergedError, epochs: list[dict], wall_time: float) -> Path:
    """DIR/failed/<run_id>.json: what a diverged run was and where it stopped (never a board row:
    the leaderboard reads DIR/runs/ only)."""
    cfg = run.cfg
    cfg_dict = asdict(cfg)
    record = dict(schema=SCHEMA_VERSION, status="diverged", error=str(err), epoch=err.epoch, step=err.step,
                  run_id=new_run_id(cfg_dict, config_key(identity(cfg))), config=cfg_dict,
                  config_key=config_key(identity(cfg)), seed=cfg.seed,
                  command=command_for(cfg), epochs=epochs, wall_time_s=wall_time, versions=_versions(),
                  git_commit=_git_commit(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return write_record(record, cfg.results_dir, folder="failed")


def _versions() -> dict[str, str]:
    import pytorch_metric_learning
    import timm

    from . import __version__

    return {"pmlbal": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__, "python": platform.python_version()}

