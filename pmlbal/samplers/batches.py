"""Training batch sources: which samples form each batch of an epoch (``pmlbal train --sampler``).

A source is registered by name (`pmlbal.registry.register("batches", name)`) and built with
``(labels, batch_size, samples_per_class, seed, resample_every)``; ``epoch(n, embed)`` returns the
epoch's batches as index arrays, calling ``embed()`` (the current model's embeddings of the
training set) only when it needs them. A source that carries state from one epoch to the next
returns it from ``state_dict()`` and takes it back in ``load_state_dict(state)`` (torch's convention,
tensors and plain values), so an interrupted run resumes exactly (`pmlbal.resume`); a source
without these methods is taken to be stateless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from ..registry import register

if TYPE_CHECKING:  # torch is imported by the one source that computes with it: `--help` lists these names
    import torch


def batches_per_epoch(n_items: int, batch_size: int) -> int:
    """Steps in one epoch, for any source: every sample about once, at least one batch."""
    return max(1, n_items // batch_size)


def check_classes_per_batch(labels: np.ndarray, batch_size: int, m: int) -> None:
    n_classes = len(np.unique(labels))
    if batch_size // m > n_classes:
        raise ValueError(
            f"batch_size/samples_per_class = {batch_size // m} classes per batch, but the split has {n_classes}"
        )


def class_balanced_batches(labels: np.ndarray, batch_size: int, m: int, seed: int) -> list[np.ndarray]:
    """One epoch of batches of batch_size/m classes x m samples (PML's MPerClassSampler).

    PML's sampler draws from numpy's global generator: it is seeded here for reproducibility and
    the caller's global state is restored afterwards, so a training run never resets it."""
    from pytorch_metric_learning.samplers import MPerClassSampler

    check_classes_per_batch(labels, batch_size, m)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        length = batches_per_epoch(len(labels), batch_size) * batch_size
        sampler = MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
        order = np.fromiter(iter(sampler), int)
    finally:
        np.random.set_state(state)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


@register("batches", "m-per-class")
class MPerClassBatches:
    """Random batches of batch_size/m classes x m samples, a new draw every epoch (the default)."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0,
                 resample_every: int = 1) -> None:
        check_classes_per_batch(labels, batch_size, samples_per_class)
        self.labels, self.batch_size, self.m, self.seed = labels, batch_size, samples_per_class, seed

    def epoch(self, n: int, embed: Callable[[], torch.Tensor]) -> list[np.ndarray]:
        return class_balanced_batches(self.labels, self.batch_size, self.m, self.seed * 1000 + n)

    def state_dict(self) -> dict:
        return {}  # each epoch's draw is a function of the seed and the epoch alone

    def load_state_dict(self, state: dict) -> None:
        pass


@register("batches", "random")
class RandomBatches:
    """Shuffled batches with no class structure, the last partial batch dropped (a DataLoader with
    shuffle=True, drop_last=True: Proxy-Anchor's sampling without --IPC); `samples_per_class` is
    not used."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0,
                 resample_every: int = 1) -> None:
        if batch_size > len(labels):
            raise ValueError(f"batch_size ({batch_size}) exceeds the training split's {len(labels)} samples")
        self.n, self.batch_size, self.seed = len(labels), batch_size, seed

    def epoch(self, n: int, embed: Callable[[], torch.Tensor]) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, n]).permutation(self.n)
        return [order[i : i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]


@register("batches", "spectral")
class SpectralBatches:
    """Batches of mutually confusable classes (`SpectralBatchSampler`, docs/method.md, 'High-loss mini-batches'), rebuilt
    from fresh embeddings every `resample_every` epochs."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0,
                 resample_every: int = 1) -> None:
        from .spectral import SpectralBatchSampler

        check_classes_per_batch(labels, batch_size, samples_per_class)
        self.sampler = SpectralBatchSampler(labels, batch_size=batch_size, samples_per_class=samples_per_class,
                                            seed=seed)
        self.resample_every = resample_every

    def epoch(self, n: int, embed: Callable[[], torch.Tensor]) -> list[np.ndarray]:
        if (n - 1) % self.resample_every == 0:
            self.sampler.update(embed())
        return [np.asarray(b) for b in self.sampler]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


@register("batches", "osgd")
class OSGDBatches:
    """Ordered SGD over batches, labelled form (docs/method.md, 'High-loss mini-batches'): each epoch draws
    `pool / top_q` epochs' worth of random batches of batch_size/m classes x m samples, scores each with
    the supervised contrastive loss (`osgd.batch_supcon`, tau = 0.1) of embeddings of the training set made
    every `resample_every` epochs, and keeps the `top_q` highest of each pool of `pool`: as many batches
    (optimiser steps) as an m-per-class epoch, the hard ones."""

    POOL, TOP_Q, TEMPERATURE = 40, 4, 0.1

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0,
                 resample_every: int = 1) -> None:
        check_classes_per_batch(labels, batch_size, samples_per_class)
        self.labels, self.batch_size, self.m, self.seed = labels, batch_size, samples_per_class, seed
        self.resample_every = resample_every
        self.z: torch.Tensor | None = None  # the last embeddings of the training set, normalised and scaled

    def epoch(self, n: int, embed: Callable[[], torch.Tensor]) -> list[np.ndarray]:
        import torch

        from .osgd import batch_supcon, top_loss_indices

        if self.z is None or (n - 1) % self.resample_every == 0:
            z = torch.nn.functional.normalize(torch.as_tensor(embed()).float(), dim=1)
            self.z = z / np.sqrt(self.TEMPERATURE)
        draws = self.POOL // self.TOP_Q  # top_q of every pool of draws x steps candidates: exactly `steps` kept
        candidates = np.stack([b for j in range(draws) for b in
                               class_balanced_batches(self.labels, self.batch_size, self.m,
                                                      (self.seed * 1000 + n) * 100 + j)])
        order = np.random.default_rng([self.seed, n]).permutation(len(candidates))
        candidates = candidates[order]  # pools mix the draws
        idx = torch.from_numpy(candidates)
        losses = batch_supcon(self.z[idx], torch.from_numpy(self.labels)[idx])
        return [candidates[i] for i in top_loss_indices(losses, self.POOL, self.TOP_Q)]

    def state_dict(self) -> dict:
        return {"z": self.z}

    def load_state_dict(self, state: dict) -> None:
        self.z = state["z"]
