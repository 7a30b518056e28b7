"""One training run -> one result record (SPEC sections 6-7; issue: benchmark harness)."""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import data as data_mod
from .data.cache import load_or_build
from .data.gpu_batches import ImageBank, center_crop_resize, normalize, random_resized_crop_flip
from .metrics import STANDARD_KS, embedding_geometry, retrieval_metrics
from .models import EmbeddingModel
from .records import SCHEMA_VERSION, config_key, new_run_id, write_record

#: Per-data-set defaults: digits is small and runs on the CPU; the image sets follow the DML literature.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(backbone="resnet10t", embedding_dim=64, cache_size=32, input_size=32, epochs=8,
                   batch_size=50, samples_per_class=10, lr=2e-3, crop_scale=0.6),
    "cub": dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
    "cars": dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                 batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
    "sop": dict(backbone="resnet50", embedding_dim=512, cache_size=256, input_size=224, epochs=40,
                batch_size=128, samples_per_class=4, lr=1e-4, crop_scale=0.2),
}


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

    def resolved(self) -> "TrainConfig":
        """A copy with data-set defaults filled in and every value checked."""
        if self.dataset not in DATASET_DEFAULTS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose from {sorted(DATASET_DEFAULTS)}")
        values = asdict(self)
        for k, v in DATASET_DEFAULTS[self.dataset].items():
            if values[k] is None:
                values[k] = v
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
        if not cfg.lr > 0:
            raise ValueError(f"lr must be > 0, got {cfg.lr}")
        if cfg.input_size > cfg.cache_size:
            raise ValueError(f"input_size ({cfg.input_size}) cannot exceed cache_size ({cfg.cache_size})")
        if cfg.sampler not in ("m-per-class", "spectral"):
            raise ValueError(f"sampler must be 'm-per-class' or 'spectral', got {cfg.sampler!r}")
        if cfg.resample_every < 1:
            raise ValueError(f"resample_every must be >= 1, got {cfg.resample_every}")
        if cfg.train_split not in ("train", "train-sub") or cfg.eval_split not in ("val", "test"):
            raise ValueError("train_split must be train|train-sub and eval_split val|test")
        return cfg


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that make a run distinct: those off the dataclass default (so adding an
    option with a default keeps the identity, and the resumability, of earlier records)."""
    defaults = TrainConfig()
    keep = {"dataset", "loss", "loss_kwargs", "seed"}
    return {k: v for k, v in asdict(cfg).items() if k in keep or v != getattr(defaults, k)}


def make_loss(name: str, **kwargs: Any) -> torch.nn.Module:
    """A pmlbal loss by registered name, or any loss of PML's own `losses` module (the baselines)."""
    from pytorch_metric_learning import losses as pml_losses

    from .registry import get

    try:
        cls = get(name, kind="loss")
    except ValueError:
        cls = getattr(pml_losses, name, None)
        if not (isinstance(cls, type) and issubclass(cls, pml_losses.BaseMetricLossFunction)):
            from .registry import list_losses

            raise ValueError(
                f"unknown loss {name!r}; pmlbal losses: {', '.join(list_losses())}; or any PML loss class name"
            ) from None
    try:
        return cls(**kwargs)
    except TypeError as err:  # an argument the class does not take, e.g. --loss-arg tmperature=0.1
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"{name}({args}): {err}") from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def distributed_context() -> tuple[int, int]:
    """(rank, world size): (0, 1) normally; under `torchrun` (WORLD_SIZE > 1) the process group is
    initialised once, NCCL on GPUs and gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def batches_per_epoch(n_items: int, batch_size: int) -> int:
    """Steps in one epoch, for either sampler: every sample about once, at least one batch."""
    return max(1, n_items // batch_size)


def check_classes_per_batch(labels: np.ndarray, batch_size: int, m: int) -> None:
    n_classes = len(np.unique(labels))
    if batch_size // m > n_classes:
        raise ValueError(
            f"batch_size/samples_per_class = {batch_size // m} classes per batch, but the split has {n_classes}"
        )


def class_balanced_batches(labels: np.ndarray, batch_size: int, m: int, seed: int) -> list[np.ndarray]:
    """One epoch of batches of batch_size/m classes x m samples (PML's MPerClassSampler)."""
    from pytorch_metric_learning.samplers import MPerClassSampler

    check_classes_per_batch(labels, batch_size, m)
    np.random.seed(seed)  # MPerClassSampler draws from numpy's global generator
    length = batches_per_epoch(len(labels), batch_size) * batch_size
    order = np.fromiter(iter(MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)), int)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


@torch.no_grad()
def embed(model: EmbeddingModel, bank: ImageBank, input_size: int, device: torch.device,
          batch_size: int = 256, amp: bool = False, augment: torch.Generator | None = None) -> torch.Tensor:
    """L2-normalised fp32 embeddings of the whole bank: centre crops, or training augmentations with `augment`."""
    model.eval()
    out = []
    for i in range(0, len(bank), batch_size):
        images = bank.take(torch.arange(i, min(i + batch_size, len(bank))))
        if augment is None:
            x = center_crop_resize(images, input_size)
        else:
            x = random_resized_crop_flip(images, input_size, augment)
        x = normalize(x, model.mean, model.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z = model(x.contiguous(memory_format=torch.channels_last) if amp else x)
        out.append(torch.nn.functional.normalize(z.float(), dim=1))
    return torch.cat(out)


def evaluate(model, bank, labels, cfg: TrainConfig, device) -> dict[str, float]:
    z = embed(model, bank, cfg.input_size, device, amp=device.type == "cuda")
    y = torch.as_tensor(labels, device=z.device)
    ks = tuple(k for k in STANDARD_KS[cfg.dataset] if k < len(y))
    metrics = retrieval_metrics(z, y, ks=ks, device=device)
    metrics.update(embedding_geometry(z, labels=y))
    return metrics


def command_for(cfg: TrainConfig) -> str:
    """The `pmlbal train` command line that reproduces `cfg`."""
    parts = ["pmlbal", "train", "--dataset", cfg.dataset, "--loss", cfg.loss]
    for k, v in sorted(cfg.loss_kwargs.items()):
        parts += ["--loss-arg", f"{k}={v}"]
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in ("dataset", "loss", "loss_kwargs", "progress", "results_dir", "cache_dir", "tuned_from",
                      "tuned_runs", "save_model"):
            continue
        v = getattr(cfg, f.name)
        d = DATASET_DEFAULTS[cfg.dataset].get(f.name, getattr(defaults, f.name))
        if v != d and v is not None:
            flag = "--" + f.name.replace("_", "-")
            parts += [flag] if v is True else [flag, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train_step(forward, loss_fn, opt, x: torch.Tensor, y: torch.Tensor, amp: bool) -> torch.Tensor:
    """One optimisation step; bf16 autocast and channels-last when `amp` (CUDA), loss in fp32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        z = forward(x.contiguous(memory_format=torch.channels_last) if amp else x)
    loss = loss_fn(z.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train(config: TrainConfig, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any] | None:
    """Train `config.backbone` with `config.loss`, evaluate, write and return the run record.

    Under `torchrun` each process trains on its slice of every global batch (`batch_size` is the
    global size), gradients are averaged by DistributedDataParallel and the loss, wrapped in PML's
    DistributedLossWrapper, sees the whole global batch; rank 0 evaluates and writes the record
    and returns it, the other ranks return None.
    """
    from tqdm.auto import tqdm

    cfg = config.resolved()
    loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs)
    rank, world = distributed_context()
    device = pick_device(cfg.device)
    if world > 1:
        if cfg.batch_size % world:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({world})")
        if cfg.sampler != "m-per-class":
            raise ValueError(f"--sampler {cfg.sampler} is not supported under torchrun; use m-per-class")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)  # the same initial model on every rank
    # Rank 0 draws the augmentations a single process would; other ranks their own stream.
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * rank)

    train_set = data_mod.create(cfg.dataset, cfg.root, cfg.train_split)
    eval_set = data_mod.create(cfg.dataset, cfg.root, cfg.eval_split)
    train_bank = ImageBank(load_or_build(train_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), device)
    eval_bank = ImageBank(load_or_build(eval_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), device)

    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, cfg.pretrained, cfg.freeze_bn).to(device)
    amp = device.type == "cuda"
    if amp:
        model = model.to(memory_format=torch.channels_last)
    forward, train_loss = model, loss_fn
    if world > 1:
        from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_loss = DistributedLossWrapper(loss_fn)  # the loss sees the global batch
    forward = torch.compile(forward) if cfg.compile else forward
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    check_classes_per_batch(train_set.labels, cfg.batch_size, cfg.samples_per_class)  # fail before any work
    steps_per_epoch = batches_per_epoch(len(train_set), cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    )

    record: dict[str, Any] = {"epochs": [], "steps": [], "world_size": world}
    initial = evaluate(model, eval_bank, eval_set.labels, cfg, device) if rank == 0 else None
    t_start, images_seen, train_time = time.perf_counter(), 0, 0.0
    bar = tqdm(total=total, desc=f"{cfg.dataset}/{cfg.loss} seed {cfg.seed}", disable=None if cfg.progress else True, leave=False)
    spectral = None
    if cfg.sampler == "spectral":
        from .samplers import SpectralBatchSampler

        spectral = SpectralBatchSampler(train_set.labels, batch_size=cfg.batch_size,
                                        samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        if spectral is not None:
            if (epoch - 1) % cfg.resample_every == 0:
                # Fresh augmentations, no gradient: the embeddings the next batches are chosen by.
                spectral.update(embed(model, train_bank, cfg.input_size, device, amp=amp, augment=gen))
            batches = [np.asarray(b) for b in spectral]
        else:
            batches = class_balanced_batches(train_set.labels, cfg.batch_size, cfg.samples_per_class,
                                             cfg.seed * 1000 + epoch)
        model.train()
        epoch_loss = []
        t0 = time.perf_counter()
        for idx in batches:
            if world > 1:  # every rank draws the same global batch and takes its own slice
                idx = np.array_split(idx, world)[rank]
            idx_t = torch.from_numpy(idx)
            x = normalize(random_resized_crop_flip(train_bank.take(idx_t), cfg.input_size, gen,
                                                   scale=(cfg.crop_scale, 1.0)), model.mean, model.std)
            y = torch.as_tensor(train_set.labels[idx], device=device)
            loss = train_step(forward, train_loss, opt, x, y, amp)
            sched.step()
            step = {"loss": loss.detach()}
            for term in ("pos_term", "entropy_term"):
                if hasattr(loss_fn, term):
                    step[term] = torch.as_tensor(getattr(loss_fn, term)).detach()
            record["steps"].append(step)
            epoch_loss.append(loss.detach())
            bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        images_seen += len(batches) * cfg.batch_size
        entry = {"epoch": epoch, "train_loss": float(torch.stack(epoch_loss).mean()), "lr": sched.get_last_lr()[0]}
        if rank == 0 and cfg.eval_every and epoch % cfg.eval_every == 0 and epoch != cfg.epochs:
            entry["metrics"] = evaluate(model, eval_bank, eval_set.labels, cfg, device)
        record["epochs"].append(entry)
        if on_epoch:
            on_epoch(entry)
    bar.close()
    if rank != 0:
        return None  # rank 0 evaluates and writes the one record of the run
    final = evaluate(model, eval_bank, eval_set.labels, cfg, device)
    record["epochs"][-1]["metrics"] = final
    # One host sync for all logged steps, at the end, not one per step.
    record["steps"] = [{k: float(v) for k, v in s.items()} for s in record["steps"]]

    cfg_dict = asdict(cfg)
    record.update(
        schema=SCHEMA_VERSION,
        run_id=new_run_id(cfg_dict),
        config=cfg_dict,
        config_key=config_key(identity(cfg)),
        seed=cfg.seed,
        command=command_for(cfg),
        initial=initial,
        final=final,
        wall_time_s=time.perf_counter() - t_start,
        train_time_s=train_time,
        images_per_s=images_seen / train_time if train_time else None,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        versions=_versions(),
        git_commit=_git_commit(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if cfg.save_model:
        record["model_path"] = str(save_checkpoint(model, cfg, record["run_id"]))
    record["path"] = str(write_record(record, cfg.results_dir))
    return record


def save_checkpoint(model: EmbeddingModel, cfg: TrainConfig, run_id: str) -> Path:
    """DIR/models/<run_id>.pt: the model's state dict and the run's config, written atomically."""
    path = Path(cfg.results_dir, "models", f"{run_id}.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"config": asdict(cfg), "run_id": run_id, "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: str = "auto") -> tuple[EmbeddingModel, TrainConfig]:
    """The model and config saved by `train(save_model=True)`; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable pmlbal checkpoint: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise ValueError(f"{path} is not a pmlbal checkpoint (no 'config' and 'state_dict')")
    cfg = TrainConfig(**{**ckpt["config"], "device": device, "pretrained": None})
    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, None, cfg.freeze_bn)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(pick_device(device)), cfg


def evaluate_checkpoint(path: str | Path, split: str = "test", root: str | None = None, device: str = "auto",
                        cache_dir: str | None = None) -> dict[str, float]:
    """Recall@K, MAP@R, R-precision and geometry of a saved model on `split` of its data set."""
    model, cfg = load_checkpoint(path, device)
    cfg = replace(cfg, eval_split=split, root=root or cfg.root, cache_dir=cache_dir)
    dev = pick_device(device)
    eval_set = data_mod.create(cfg.dataset, cfg.root, split)
    bank = ImageBank(load_or_build(eval_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), dev)
    return evaluate(model, bank, eval_set.labels, cfg, dev)


def _versions() -> dict[str, str]:
    import pytorch_metric_learning
    import timm

    from . import __version__

    return {"pmlbal": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__, "python": platform.python_version()}

