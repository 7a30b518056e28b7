"""Spectral clustering into equal-size groups (Cho et al., arXiv 2307.05906, docs/method.md, 'High-loss mini-batches')."""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import eigh
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans


def pair_affinity(u: torch.Tensor, v: torch.Tensor, batch_size: int) -> np.ndarray:
    """A = a + a^T with a_ij = log(1 + (B-1) e^{u_i.v_j - u_i.v_i}) + log(1 + (B-1) e^{u_j.v_i - u_i.v_i}).

    a_ij is (a bound on) the contrastive loss i and j add to each other when they share a
    batch; u and v are the two views, normalised and divided by sqrt(temperature).
    """
    s = (u @ v.T).double()
    diag = torch.diagonal(s)[:, None]
    log_b = np.log(max(batch_size - 1, 1))
    a = torch.nn.functional.softplus(s - diag + log_b) + torch.nn.functional.softplus(s.T - diag + log_b)
    return (a + a.T).cpu().numpy()


def spectral_embedding(affinity: np.ndarray, k: int) -> np.ndarray:
    """Top-k eigenvectors of D^-1/2 W D^-1/2 with W = exp(A) (the normalised Laplacian's bottom k)."""
    # exp(A - max A) scales W by a constant, which leaves the normalised operator unchanged.
    w = np.exp(affinity - affinity.max())
    d = w.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(d, 1e-300))
    m = inv_sqrt[:, None] * w * inv_sqrt[None, :]
    n = len(m)
    _, vecs = eigh(m, subset_by_index=(max(0, n - k), n - 1))
    vecs = vecs * inv_sqrt[:, None]  # random-walk normalisation, as sklearn's spectral_embedding does
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


def equal_size_clusters(features: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means, then each centre repeated size times and a Hungarian assignment: clusters of exactly n/k."""
    n = len(features)
    if n % n_clusters:
        raise ValueError(f"{n} items cannot form {n_clusters} equal clusters")
    size = n // n_clusters
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(features)
    centres = np.repeat(km.cluster_centers_, size, axis=0)
    cost = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols // size
    return out


def spectral_groups(u: torch.Tensor, v: torch.Tensor, group_size: int, n_groups: int, seed: int) -> list[np.ndarray]:
    """Split rows 0..n-1 (n = group_size * n_groups) into high-affinity groups of exactly group_size."""
    emb = spectral_embedding(pair_affinity(u, v, group_size), n_groups)
    assign = equal_size_clusters(emb, n_groups, seed)
    return [np.flatnonzero(assign == c) for c in range(n_groups)]
