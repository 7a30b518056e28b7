"""Saved models: `train(save_model=True)` writes one, `pmlbal eval` reads it back."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import TrainConfig
from .devices import pick_device
from .evaluation import evaluate
from .files import atomic_path, describe_load_error
from .models import EmbeddingModel


def save_checkpoint(model: EmbeddingModel, cfg, run_id: str) -> Path:
    """DIR/models/<run_id>.pt: the model's state dict and the run's config, written atomically."""
    path = Path(cfg.results_dir, "models", f"{run_id}.pt")
    with atomic_path(path) as tmp:
        torch.save({"config": asdict(cfg), "run_id": run_id, "state_dict": model.state_dict()}, tmp)
    return path


def load_checkpoint(path: str | Path, device: str = "auto"):
    """The model and `TrainConfig` saved by `train(save_model=True)`; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable pmlbal checkpoint ({describe_load_error(err, path)})") from None
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise ValueError(f"{path} is not a pmlbal checkpoint (no 'config' and 'state_dict')")
    cfg = TrainConfig(**{**ckpt["config"], "device": device, "pretrained": None})
    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, None, cfg.freeze_bn, cfg.pooling, cfg.head_init)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(pick_device(device)), cfg


def evaluate_checkpoint(path: str | Path, split: str = "test", root: str | None = None, device: str = "auto",
                        cache_dir: str | None = None, warn=None) -> dict[str, float]:
    """Recall@K, MAP@R, R-precision and geometry of a saved model on `split` of its data set.

    `warn(message)` (default: `warnings.warn`) hears when `split` holds classes the model was
    trained on: `val` is carved from the train classes, so a model trained on the full train
    split has seen every val class and its val scores are not zero-shot."""
    from . import data
    from .data.cache import load_or_build
    from .data.gpu_batches import ImageBank

    model, cfg = load_checkpoint(path, device)
    if split == "val" and cfg.train_split == "train":
        message = (f"{path} was trained on the full train split, which holds every val class: "
                   f"its val metrics are not zero-shot (use --split test)")
        if warn is None:
            import warnings

            warnings.warn(message, stacklevel=2)
        else:
            warn(message)
    cfg = replace(cfg, eval_split=split, root=root or cfg.root, cache_dir=cache_dir)
    dev = pick_device(device)
    eval_set = data.create(cfg.dataset, cfg.root, split)
    bank = ImageBank(load_or_build(eval_set, cfg.cache_size, cfg.cache_dir, progress=cfg.progress), dev)
    return evaluate(model, bank, eval_set.labels, cfg, dev)
