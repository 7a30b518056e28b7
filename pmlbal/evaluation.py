"""Evaluation of a model: embeddings of an image bank, retrieval metrics and embedding geometry."""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import TrainConfig
from .data.gpu_batches import ImageBank, center_crop_resize, normalize, random_resized_crop_flip
from .metrics import embedding_geometry, retrieval_metrics
from .metrics.probes import knn_top1, linear_top1
from .models import EmbeddingModel
from .registry import dataset_spec

class MetricsError(ValueError):
    """Evaluation gave NaN metrics (the message names the cause): nothing to record."""


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


def evaluate_ssl(model, train_bank, train_labels, eval_bank, eval_labels, cfg: TrainConfig, device,
                 linear: bool = False) -> dict[str, float]:
    """A self-supervised run's evaluation (``--task ssl``), on the features `cfg.eval_on` names (the
    backbone's by default): `evaluate`'s retrieval metrics and geometry on the test split, the kNN
    top-1 accuracy with the train split as the bank (`metrics.probes.knn_top1`), and with `linear`
    the linear probe's (`metrics.probes.linear_top1`). The labels are read here only."""
    metrics = evaluate(model, eval_bank, eval_labels, cfg, device)
    amp = device.type == "cuda"
    bank = embed(model, train_bank, cfg.input_size, device, amp=amp, on=cfg.eval_on)
    queries = embed(model, eval_bank, cfg.input_size, device, amp=amp, on=cfg.eval_on)
    metrics["knn_top1"] = knn_top1(bank, train_labels, queries, eval_labels)
    if linear:
        metrics["linear_top1"] = linear_top1(bank, train_labels, queries, eval_labels)
    return metrics


def check_retrievable(labels: np.ndarray) -> bool:
    """Whether some class has two images, so that a query can retrieve one of its own class."""
    return bool(len(labels)) and int(np.unique(np.asarray(labels), return_counts=True)[1].max()) >= 2
