"""Embedding geometry (Wang & Isola's alignment/uniformity; effective rank), docs/method.md, 'DHEL and KCL'."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def alignment(z: torch.Tensor, z_plus: torch.Tensor) -> float:
    """E ||z_i - z_i+||^2 over paired rows, on L2-normalised vectors."""
    if z.shape != z_plus.shape:
        raise ValueError(f"alignment needs paired views of one shape, got {tuple(z.shape)} and {tuple(z_plus.shape)}")
    a, b = F.normalize(z.float(), dim=1), F.normalize(z_plus.float(), dim=1)
    return float(((a - b) ** 2).sum(dim=1).mean())


def class_alignment(z: torch.Tensor, labels: torch.Tensor, block: int = 4096) -> float:
    """E ||z_i - z_j||^2 over same-class pairs i != j (the labelled analogue of alignment)."""
    a = F.normalize(z.float(), dim=1)
    labels = labels.to(a.device)
    total, count = 0.0, 0
    for r0 in range(0, len(a), block):
        sq = (2.0 - 2.0 * a[r0 : r0 + block] @ a.T).clamp(min=0)
        same = labels[r0 : r0 + block, None] == labels[None, :]
        rows = torch.arange(r0, min(r0 + block, len(a)), device=a.device)
        same[rows - r0, rows] = False
        total += float(sq[same].sum())
        count += int(same.sum())
    return total / count if count else math.nan


def uniformity(z: torch.Tensor, t: float = 2.0, block: int = 4096) -> float:
    """log E_{i != j} exp(-t ||z_i - z_j||^2) on L2-normalised vectors (lower is more uniform)."""
    a = F.normalize(z.float(), dim=1)
    n = len(a)
    if n < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    lse_parts = []
    for r0 in range(0, n, block):
        sq = (2.0 - 2.0 * a[r0 : r0 + block] @ a.T).clamp(min=0)
        logits = -t * sq
        rows = torch.arange(r0, min(r0 + block, n), device=a.device)
        logits[rows - r0, rows] = float("-inf")
        lse_parts.append(torch.logsumexp(logits.flatten(), dim=0))
    return float(torch.logsumexp(torch.stack(lse_parts), dim=0) - math.log(n * (n - 1)))


def effective_rank(z: torch.Tensor) -> float:
    """exp(H(sigma / ||sigma||_1)) of the embedding matrix's singular values (Roy & Vetterli).

    Equals the dimension for an isotropic cloud and 1 under total dimensional collapse.
    """
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"effective_rank needs a non-empty 2-D matrix, got shape {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_geometry(z: torch.Tensor, labels: torch.Tensor | None = None, z_plus: torch.Tensor | None = None,
                       max_points: int = 10000) -> dict[str, float]:
    """All geometry metrics in one call, on at most `max_points` rows (a fixed-seed subsample)."""
    if len(z) > max_points:
        idx = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:max_points]
        z = z[idx.to(z.device)]
        labels = None if labels is None else labels[idx.to(labels.device)]
        z_plus = None if z_plus is None else z_plus[idx.to(z_plus.device)]
    out = {"uniformity": uniformity(z), "effective_rank": effective_rank(z)}
    if z_plus is not None:
        out["alignment"] = alignment(z, z_plus)
    elif labels is not None:
        out["alignment"] = class_alignment(z, labels)
    return out
