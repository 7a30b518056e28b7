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


def batch_supcon(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Supervised contrastive loss of each batch (the labelled form of `batch_infonce`): z of shape
    [n_batches, B, d], already normalised and scaled by 1/sqrt(tau), labels [n_batches, B]; per anchor
    -mean_{p in P(i)} s_ip + log sum_{j != i} e^{s_ij}, averaged over the anchors with a positive."""
    s = z @ z.transpose(1, 2)
    eye = torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    pos = (labels[:, :, None] == labels[:, None, :]) & ~eye
    log_den = torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=2)
    n_pos = pos.sum(2)
    per_anchor = log_den - (s * pos).sum(2) / n_pos.clamp(min=1)
    has = n_pos > 0
    return (per_anchor * has).sum(1) / has.sum(1).clamp(min=1)


def top_loss_indices(losses: torch.Tensor, pool: int, top_q: int) -> list[int]:
    """OSGD's selection: the candidates' `losses` in pools of `pool` in order, the indices of the `top_q`
    of each pool with the highest loss (a last, smaller pool keeps its share, at least one)."""
    chosen = []
    for p0 in range(0, len(losses), pool):
        part = losses[p0 : p0 + pool]
        q = max(1, round(top_q * len(part) / pool))
        chosen.extend(p0 + i for i in torch.topk(part, q).indices.tolist())
    return chosen


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
        idx = torch.from_numpy(batches)
        self._batches = [batches[i] for i in top_loss_indices(batch_infonce(u[idx], v[idx]), self.pool, self.top_q)]
