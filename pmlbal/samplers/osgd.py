"""OSGDBatchSampler: the top-q highest-loss batches out of pools of random batches (Cho et al.'s baseline)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..registry import register


def batch_infonce(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of each batch: u, v of shape [n_batches, B, d], already scaled by 1/sqrt(tau)."""
    s = u @ v.transpose(1, 2)
    target = torch.arange(s.shape[1], device=s.device).expand(s.shape[0], -1)
    l1 = F.cross_entropy(s.transpose(1, 2), target, reduction="none").mean(1)
    l2 = F.cross_entropy(s, target, reduction="none").mean(1)
    return (l1 + l2) / 2


@register("sampler")
class OSGDBatchSampler(Sampler[list[int]]):
    """Ordered SGD over batches: split a shuffle into pools of `pool` random batches, keep the `top_q` with the highest loss.

    Self-supervised (two views). Until the first ``update(view1, view2)`` it yields random batches.
    """

    def __init__(self, num_samples: int, batch_size: int = 32, pool: int = 40, top_q: int = 4,
                 temperature: float = 0.1, seed: int = 0) -> None:
        if not 1 <= top_q <= pool:
            raise ValueError(f"top_q must be in 1..pool ({pool}), got {top_q}")
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} samples cannot fill one batch of {batch_size}")
        self.n, self.batch_size, self.pool, self.top_q = num_samples, batch_size, pool, top_q
        self.temperature, self.seed, self.updates = temperature, seed, 0
        self._batches: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._batches) if self._batches is not None else self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        if self._batches is None:
            perm = np.random.default_rng([self.seed, self.updates]).permutation(self.n)
            batches = [perm[i : i + self.batch_size] for i in range(0, self.n - self.batch_size + 1, self.batch_size)]
        else:
            batches = self._batches
        for b in batches:
            yield b.tolist()

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, view2: torch.Tensor) -> None:
        rng = np.random.default_rng([self.seed, self.updates])
        self.updates += 1
        scale = 1.0 / np.sqrt(self.temperature)
        u = F.normalize(torch.as_tensor(embeddings).float(), dim=1) * scale
        v = F.normalize(torch.as_tensor(view2).float(), dim=1) * scale
        perm = rng.permutation(self.n)
        n_batches = self.n // self.batch_size
        batches = perm[: n_batches * self.batch_size].reshape(n_batches, self.batch_size)
        chosen = []
        for p0 in range(0, n_batches, self.pool):
            pool = batches[p0 : p0 + self.pool]
            idx = torch.from_numpy(pool)
            losses = batch_infonce(u[idx], v[idx])
            q = max(1, round(self.top_q * len(pool) / self.pool))
            chosen.extend(pool[i] for i in torch.topk(losses, q).indices.tolist())
        self._batches = chosen
