"""SpectralBatchSampler: high-loss mini-batches by spectral clustering (Cho et al., arXiv 2307.05906)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..registry import register
from .clustering import spectral_groups


def _class_balanced_epoch(labels: np.ndarray, groups: list[np.ndarray], m: int, n_batches: int,
                          rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of the given class groups x m samples, cycling each class's shuffled samples."""
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    cursor = dict.fromkeys(by_class, 0)
    batches = []
    while len(batches) < n_batches:
        for g in rng.permutation(len(groups)):
            batch = []
            for c in groups[g]:
                idx = by_class[c]
                take = [idx[(cursor[c] + j) % len(idx)] for j in range(m)]
                cursor[c] += m
                batch.extend(take)
            batches.append(np.array(batch))
            if len(batches) == n_batches:
                break
    return batches


@register("sampler")
class SpectralBatchSampler(Sampler[list[int]]):
    """A batch sampler that groups samples (or classes) that incur a high loss together.

    Self-supervised mode (``labels=None``), the paper's algorithm: the (shuffled) indices
    are split into chunks of k*B; per chunk, the affinity A of docs/method.md, 'High-loss mini-batches' gives a
    spectral embedding (normalised Laplacian, k components), k-means and an equal-size
    assignment make k batches of exactly B. ``len(dataset) mod k*B`` indices are left
    out of an epoch; the shuffle differs per update, so the left-out ones rotate.

    Labelled mode (pmlbal design): the same algorithm on class means: chunks of k*P
    classes (P = batch_size / samples_per_class) are clustered into groups of P
    mutually confusable classes; each batch is one group x samples_per_class samples.

    Until the first ``update`` it yields random batches (class-balanced in labelled mode).
    ``update(embeddings, labels_or_view2)`` recomputes the batches: the second view's
    embeddings in self-supervised mode, nothing (or the labels) in labelled mode.
    """

    def __init__(self, labels=None, batch_size: int = 32, k: int = 40, temperature: float = 0.1,
                 samples_per_class: int = 4, num_samples: int | None = None, seed: int = 0) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        if k < 2:
            raise ValueError(f"k (batches per cluster chunk) must be >= 2, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.batch_size, self.k, self.temperature, self.seed = batch_size, k, temperature, seed
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.updates = 0
        self._batches: list[np.ndarray] | None = None
        if self.labels is not None:
            if batch_size % samples_per_class:
                raise ValueError(
                    f"batch_size ({batch_size}) must be a multiple of samples_per_class ({samples_per_class})"
                )
            self.m = samples_per_class
            self.P = batch_size // samples_per_class
            n_classes = len(np.unique(self.labels))
            if self.P > n_classes:
                raise ValueError(f"{self.P} classes per batch but only {n_classes} classes")
            self.n = len(self.labels)
        else:
            if num_samples is None:
                raise ValueError("num_samples is required in self-supervised mode (labels=None)")
            self.n = int(num_samples)
        if self.n < batch_size:
            raise ValueError(f"{self.n} samples cannot fill one batch of {batch_size}")

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.updates])

    def state_dict(self) -> dict:
        """What the sampler learnt from its updates (its batches and their count), as tensors."""
        batches = None if self._batches is None else [torch.from_numpy(np.asarray(b)) for b in self._batches]
        return {"updates": self.updates, "batches": batches}

    def load_state_dict(self, state: dict) -> None:
        """Take back a `state_dict()`: the next epoch is the one the saved sampler would have yielded."""
        self.updates = int(state["updates"])
        self._batches = None if state["batches"] is None else [b.numpy() for b in state["batches"]]

    def __len__(self) -> int:
        if self._batches is not None:
            return len(self._batches)
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches if self._batches is not None else self._random_batches()
        for b in batches:
            yield b.tolist()

    def _random_batches(self) -> list[np.ndarray]:
        rng = self._rng()
        if self.labels is None:
            perm = rng.permutation(self.n)
            return [perm[i : i + self.batch_size] for i in range(0, self.n - self.batch_size + 1, self.batch_size)]
        classes = rng.permutation(np.unique(self.labels))
        groups = [classes[i : i + self.P] for i in range(0, len(classes) - self.P + 1, self.P)]
        return _class_balanced_epoch(self.labels, groups, self.m, self.n // self.batch_size, rng)

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels_or_view2=None) -> None:
        """Recompute the batches from fresh embeddings of the whole training set."""
        rng = self._rng()
        self.updates += 1
        scale = 1.0 / np.sqrt(self.temperature)
        z = F.normalize(torch.as_tensor(embeddings).float(), dim=1) * scale
        if len(z) != self.n:
            raise ValueError(f"update got {len(z)} embeddings for a sampler over {self.n} samples")
        if self.labels is None:
            if labels_or_view2 is None:
                raise ValueError("self-supervised mode needs the second view's embeddings")
            v = F.normalize(torch.as_tensor(labels_or_view2).float(), dim=1) * scale
            if v.shape != z.shape:
                raise ValueError(f"the two views differ in shape: {tuple(z.shape)} vs {tuple(v.shape)}")
            self._batches = self._cluster(z, v, rng, self.batch_size, np.arange(self.n))
            return
        classes = np.unique(self.labels)
        means = torch.stack([z[torch.from_numpy(self.labels == c)].mean(0) for c in classes])
        means = F.normalize(means, dim=1) * scale
        groups = [classes[g] for g in self._cluster(means, means, rng, self.P, np.arange(len(classes)))]
        self._batches = _class_balanced_epoch(self.labels, groups, self.m, self.n // self.batch_size, rng)

    def _cluster(self, u, v, rng, group, items) -> list[np.ndarray]:
        perm = rng.permutation(items)
        chunk = self.k * group
        out = []
        if len(perm) < chunk:  # a smaller last chunk: as many whole groups as fit
            chunk = (len(perm) // group) * group
        for start in range(0, len(perm) - chunk + 1, chunk):
            idx = perm[start : start + chunk]
            t = torch.from_numpy(idx)
            n_groups = chunk // group
            if n_groups == 1:
                out.append(idx)
                continue
            for g in spectral_groups(u[t], v[t], group, n_groups, int(rng.integers(1 << 31))):
                out.append(idx[g])
        order = rng.permutation(len(out))
        return [out[i] for i in order]
