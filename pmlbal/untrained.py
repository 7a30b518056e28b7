"""The untrained model's metrics, evaluated once per distinct starting network.

Every run records the metrics of its model before the first step (the board's untrained row). All
runs of a sweep or a bench that share a seed start from the same network, and on Fashion-MNIST that
exact evaluation (35,000 queries, MAP@R at R = 7,000) costs as much as the training itself on a
2-core CPU. The result is a pure function of the network's weights and buffers, the evaluation
images and the evaluation settings, so it is memoised under a hash of exactly those, next to the
image cache. Anything that could change the numbers is in the key; a miss just evaluates.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from . import config
from .data.cache import cache_path, default_cache_dir
from .records import atomic_write_text

if TYPE_CHECKING:
    from .build import Run
    from .data.gpu_batches import ImageBank

#: TrainConfig fields that only shape training, never the evaluation of a given network (the seed
#: acts through the weights, which are hashed; the device is keyed by its kind below): derived from
#: `pmlbal.config.FIELD_ROLES`. Every other field, new ones included, is in the key.
TRAINING_ONLY = config.TRAINING_ONLY
_CODE = ("metrics/retrieval.py", "metrics/geometry.py", "metrics/probes.py", "evaluation.py", "models/__init__.py",
         "models/embedding.py", "data/gpu_batches.py")


def _code_hash() -> str:
    root = Path(__file__).parent
    h = hashlib.sha256()
    for rel in _CODE:
        path = root / rel
        h.update(path.read_bytes() if path.exists() else rel.encode())
    return h.hexdigest()


# Taken at import: the code this process runs, even if the files change under a long sweep.
_CODE_HASH = _code_hash()


def untrained_key(run: "Run") -> str:
    """Hash of everything the untrained evaluation depends on."""
    h = hashlib.sha256()
    for name, value in sorted(run.model.state_dict().items()):
        h.update(name.encode())
        if torch.is_tensor(value):
            t = value.detach().to("cpu").contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    settings = {k: v for k, v in asdict(run.cfg).items() if k not in TRAINING_ONLY}
    settings["eval_images"] = cache_path(run.eval_set, run.cfg.cache_size).name
    settings["device"] = run.device.type
    # On a CPU the thread count decides the last bits of a reduction (an effective rank moved at 1e-15 with
    # it): a memo of a 1-thread run is not the 2-thread run's evaluation.
    settings["threads"] = torch.get_num_threads() if run.device.type == "cpu" else None
    settings["torch"] = torch.__version__
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(_CODE_HASH.encode())
    return h.hexdigest()[:32]


def _read_memo(path: Path) -> dict[str, float] | None:
    """The memo at `path` if it holds metrics (a non-empty mapping of names to numbers, Recall@1
    among them); a damaged or foreign file is reported and evaluated anew, never used."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        warnings.warn(f"untrained-metrics memo {path} is unreadable ({err}); evaluating again", stacklevel=3)
        return None
    if (isinstance(value, dict) and "recall@1" in value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())):
        return value
    warnings.warn(f"untrained-metrics memo {path} does not hold metrics ({type(value).__name__}); evaluating again",
                  stacklevel=3)
    return None


def _memoised(run: "Run", name: str, compute) -> dict[str, float]:
    """The metrics memoised as <cache>/untrained/<dataset>-<name>.json, else `compute()` written there
    atomically (a read-only cache folder costs the next run an evaluation, nothing else)."""
    folder = Path(run.cfg.cache_dir) if run.cfg.cache_dir is not None else default_cache_dir()
    path = folder / "untrained" / f"{run.cfg.dataset}-{name}.json"
    cached = _read_memo(path)
    if cached is not None:
        return cached
    metrics = compute()
    try:
        atomic_write_text(path, json.dumps(metrics))
    except OSError:
        pass
    return metrics


def untrained_metrics(run: "Run", log: Callable[[str], None] | None = None) -> dict[str, float]:
    """`run.evaluate()` of the untrained model, from the memo when this exact network and evaluation
    were seen before (the file is written atomically; an unreadable one is re-evaluated). `log` hears
    of an evaluation before it starts (on a large test split it takes minutes), not of a memo read."""

    def evaluate() -> dict[str, float]:
        if log is not None:
            log(f"{run.cfg.dataset}: evaluating the untrained network on {run.cfg.eval_split}")
        return run.evaluate(final=True)  # a self-supervised run's untrained row has the linear probe too

    return _memoised(run, untrained_key(run), evaluate)


#: Largest evaluation split (images x pixels) the raw-pixel baseline is computed for: on the small data
#: sets it costs about one evaluation, once; at CUB's 256 px it would not be cheap, and is left out.
PIXEL_BASELINE_MAX_VALUES = 200_000_000


def pixel_metrics(run: "Run") -> dict[str, float] | None:
    """Retrieval metrics of the raw pixels: each evaluation image of the cache (cache_size, RGB) as
    one L2-normalised vector, searched and scored exactly as embeddings are; for a self-supervised run
    also the kNN and linear probes with the training images' pixels as the bank. Memoised per
    evaluation cache; None where the split is too large for this to be cheap."""
    from .metrics import retrieval_metrics
    from .metrics.probes import knn_top1, linear_top1

    bank, ssl = run.eval_bank, getattr(run.cfg, "task", "metric") == "ssl"
    if bank.data.numel() > PIXEL_BASELINE_MAX_VALUES or ssl and run.train_bank.data.numel() > PIXEL_BASELINE_MAX_VALUES:
        return None
    from .registry import dataset_spec

    y = torch.as_tensor(run.eval_set.labels, device=run.device)
    ks = tuple(k for k in dataset_spec(run.cfg.dataset).ks if k < len(y))
    h = hashlib.sha256()
    key = {"eval_images": cache_path(run.eval_set, run.cfg.cache_size).name, "ks": ks, "device": run.device.type,
           "torch": torch.__version__, "threads": torch.get_num_threads() if run.device.type == "cpu" else None}
    if ssl:  # the probes' bank: the training images (the metric-learning memo keeps its old key)
        key["train_images"] = cache_path(run.train_set, run.cfg.cache_size).name
    h.update(json.dumps(key, sort_keys=True).encode())
    h.update(_CODE_HASH.encode())

    def flat(images: "ImageBank") -> torch.Tensor:
        return torch.nn.functional.normalize(images.data.reshape(len(images), -1).to(run.device).float(), dim=1)

    def compute() -> dict[str, float]:
        z = flat(bank)
        metrics = retrieval_metrics(z, y, ks=ks, device=run.device)
        if ssl:
            train = flat(run.train_bank)
            metrics["knn_top1"] = knn_top1(train, run.train_set.labels, z, run.eval_set.labels)
            metrics["linear_top1"] = linear_top1(train, run.train_set.labels, z, run.eval_set.labels)
        return metrics

    return _memoised(run, f"pixels-{h.hexdigest()[:32]}", compute)
