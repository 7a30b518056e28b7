"""Run assembly: a resolved configuration turned into a `Run` (process set-up, data, model, loss,
optimiser, schedule and batch source), built from the library's factories."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import data as data_mod
from .config import TrainConfig, data_splits
from .data.cache import load_or_build, load_or_build_aspect
from .data.gpu_batches import ImageBank
from .data.views import make_views
from .devices import distributed_context, pick_device, run_device
from .evaluation import check_retrievable, evaluate, evaluate_ssl
from .models import EmbeddingModel
from .optim import make_optimizer, make_schedule, param_groups
from .registry import create, get, list_losses
from .samplers.batches import batches_per_epoch

def make_loss(name: str, **kwargs: Any) -> torch.nn.Module:
    """A loss by registered name: pmlbal's, or any of PML's own (the baselines)."""
    try:
        get(name, kind="loss")
    except ValueError:
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
    try:
        params = inspect.signature(get(name, kind="loss").__init__).parameters
    except ValueError:
        return dict(kwargs)  # unknown names fail in make_loss with the full list
    known = {"num_classes": num_classes, "embedding_size": embedding_size}
    return {**{k: v for k, v in known.items() if k in params and k not in kwargs}, **kwargs}


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
        warnings.warn(f"{int((sizes < cfg.samples_per_class).sum())} of {len(sizes)} classes of "
                      f"{cfg.dataset}/{cfg.train_split} have fewer than samples_per_class ({cfg.samples_per_class}) "
                      f"images (smallest {sizes.min()}): their images repeat within a batch", stacklevel=2)
    if not check_retrievable(eval_labels):
        raise ValueError(f"{cfg.dataset}/{cfg.eval_split}: every class has a single image, so no query has a "
                         f"same-class reference and every retrieval metric would be NaN")


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
    #: A cross-validation fold's held-out train classes (their images and labels), on which the
    #: fold's model is validated, as MLRC does.
    held_out: tuple[ImageBank, np.ndarray] | None = None
    #: ``--task ssl``: one random view of each image of a batch (`pmlbal.data.views`); None for metric runs.
    views: Callable | None = None

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"

    def evaluate(self, final: bool = False) -> dict[str, float]:
        """The model's metrics on the evaluation split; a self-supervised run's with the kNN probe, and
        at the `final` evaluation the linear probe too."""
        if self.cfg.task == "ssl":
            return evaluate_ssl(self.model, self.train_bank, self.train_set.labels, self.eval_bank,
                                self.eval_set.labels, self.cfg, self.device, linear=final)
        return evaluate(self.model, self.eval_bank, self.eval_set.labels, self.cfg, self.device)


def fold_mask(labels: np.ndarray, folds: int, fold: int) -> np.ndarray:
    """The samples a cross-validation model trains on: every class outside `fold` of `folds`
    contiguous, class-disjoint parts of the classes (powerful-benchmarker's training partitions)."""
    held_out = np.array_split(np.unique(labels), folds)[fold]
    return ~np.isin(labels, held_out)


def _held_out(train_set: Any, square: np.ndarray | None, mask: np.ndarray, cfg: TrainConfig,
              device: torch.device) -> tuple[ImageBank, np.ndarray]:
    """The evaluation bank of the train images under `mask` (a fold's held-out classes); `square`: the
    square training cache when it is one, else it is read as the evaluation cache is."""
    if square is None:
        square = load_or_build(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress)
    return ImageBank(square[mask], device), train_set.labels[mask]


def build_run(config: TrainConfig, fold: int | None = None, log: Callable[[str], None] | None = None) -> Run:
    """Resolve `config`, set up the process (torchrun), data, model, loss, optimiser and batch
    source; with `fold`, on the train classes outside that cross-validation fold. Seeds the global
    torch generator (the model's initialisation): call it inside `torch.random.fork_rng` to keep
    the caller's state, as `train` does. `log` hears of the image cache once the data set's layout
    has been checked, before its decoding (minutes the first time)."""
    cfg = config.resolved()
    if cfg.cv_folds and fold is None or fold is not None and not 0 <= fold < cfg.cv_folds:
        raise ValueError(f"fold must be in 0..{cfg.cv_folds - 1} for cv_folds={cfg.cv_folds}, got {fold}")
    rank, world = distributed_context(pick_device(cfg.device))
    device = run_device(cfg, rank, world)
    torch.manual_seed(cfg.seed)  # the same initial model on every rank
    # Rank 0 draws the augmentations a single process would; other ranks their own stream.
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * rank)

    train_set, eval_set, train_bank, eval_bank, held_out = _load_data(cfg, device, fold, log if rank == 0 else None)
    ssl = cfg.task == "ssl"
    if ssl and world > 1:
        raise ValueError("--task ssl runs in one process for now (its two-view loss under torchrun is not built)")
    # Self-supervised batch sources and losses see no labels: each image is its own class.
    loss_labels = np.arange(len(train_set)) if ssl else np.unique(train_set.labels, return_inverse=True)[1].reshape(-1)
    # A loss with parameters (Proxy-Anchor's proxies) draws them from a fork of the seeded generator,
    # so every loss of one seed starts from the same network: paired comparisons, one untrained row.
    with torch.random.fork_rng(devices=[]):
        loss_fn = make_loss(cfg.loss, **(cfg.loss_kwargs if ssl else loss_data_args(
            cfg.loss, cfg.loss_kwargs, int(loss_labels.max()) + 1, cfg.embedding_dim)))
    if hasattr(loss_fn, "check_finite"):
        # The trainer checks every loss itself (`DivergedError`, naming epoch and step), without a
        # host sync per step on a GPU; non-finite embeddings show there as a non-finite loss.
        loss_fn.check_finite = False

    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, cfg.pretrained, cfg.freeze_bn, cfg.pooling,
                           cfg.head_init).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    forward, train_loss = _distributed(model, loss_fn, device, world)
    if ssl:
        train_loss = two_view_loss(loss_fn, cfg.loss)
    forward = torch.compile(forward) if cfg.compile else forward
    opt = make_optimizer(cfg.optimizer, param_groups(model, loss_fn, cfg.lr, cfg.head_lr, cfg.loss_lr), cfg.lr,
                         cfg.weight_decay)
    # Built before any training step: a batch/class mismatch fails here, not after the first epoch.
    batches = get(cfg.sampler, kind="batches")(loss_labels if ssl else train_set.labels, cfg.batch_size,
                                               cfg.samples_per_class, seed=cfg.seed, resample_every=cfg.resample_every)
    sched = make_schedule(opt, cfg.schedule, cfg.epochs, batches_per_epoch(len(train_set), cfg.batch_size),
                          cfg.warmup_epochs, cfg.lr_step_epochs, cfg.lr_gamma)
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    views = make_views(cfg.views, cfg.input_size) if ssl else None
    return Run(cfg, rank, world, device, gen, train_set, eval_set, train_bank, eval_bank, model, forward, loss_fn,
               train_loss, opt, sched, batches, None if ssl else loss_labels, trunk, fold, held_out, views)


def two_view_loss(loss_fn: torch.nn.Module, name: str) -> Callable:
    """A self-supervised step's loss: the batch's embeddings are its first views then its second views,
    and each loss is called in the two-view form PML defines (`SelfSupervisedLoss`, symmetric: each view
    is the other's reference; DHEL and KCL take it as their `ref_emb` form); labels are never passed."""
    from pytorch_metric_learning.losses import SelfSupervisedLoss

    try:
        wrapped = SelfSupervisedLoss(loss_fn, symmetric=True)
    except Exception as err:  # PML refuses a loss without a two-view form by raising a bare Exception
        raise ValueError(f"--task ssl: {name} has no two-view form ({err})") from None

    def loss(z: torch.Tensor, _labels: None) -> torch.Tensor:
        first, second = z.chunk(2)
        return wrapped(first, second)

    return loss


def _load_data(cfg: TrainConfig, device: torch.device, fold: int | None,
               log: Callable[[str], None] | None = None) -> tuple[Any, Any, ImageBank, ImageBank, Any]:
    """The train and eval splits (of the run's validation fold, `data_splits`) and their decoded
    images (opened from the cache, or decoded into it first); with `fold`, the train split keeps
    only the classes outside that cross-validation fold, and the fifth value is the held-out
    classes' evaluation bank and labels (else None)."""
    train_split, eval_split = data_splits(cfg)
    train_set = data_mod.create(cfg.dataset, cfg.root, train_split)
    eval_set = data_mod.create(cfg.dataset, cfg.root, eval_split)
    check_splits(train_set.labels, eval_set.labels, cfg)  # before any decoding or training
    if log:  # a missing root or layout has been reported by now: the cache comes next
        log(f"{cfg.dataset}: preparing the image cache ({train_split} and {eval_split} at {cfg.cache_size} px; "
            "decoded once, then reused)")
    if cfg.cache_mode == "aspect":
        images, boxes = load_or_build_aspect(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress)
    else:
        images, boxes = load_or_build(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), None
    held_out = None
    if fold is not None:
        keep = fold_mask(train_set.labels, cfg.cv_folds, fold)
        held_out = _held_out(train_set, images if boxes is None else None, ~keep, cfg, device)
        train_set.paths = [p for p, k in zip(train_set.paths, keep) if k]
        train_set.labels = train_set.labels[keep]
        images, boxes = images[keep], None if boxes is None else boxes[keep]
    train_bank = ImageBank(images, device, boxes)
    eval_bank = ImageBank(load_or_build(eval_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), device)
    return train_set, eval_set, train_bank, eval_bank, held_out


def _distributed(model: EmbeddingModel, loss_fn: torch.nn.Module, device: torch.device,
                 world: int) -> tuple[Callable, Callable]:
    """The model and the loss as training calls them: as they are in one process; under torchrun the
    model DDP-wrapped and the loss seeing the global batch."""
    if world == 1:
        return model, loss_fn
    from torch.nn.parallel import DistributedDataParallel

    from .distributed import DistributedLoss

    forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return forward, DistributedLoss(loss_fn)  # the loss sees the global batch; its own parameters stay in sync
