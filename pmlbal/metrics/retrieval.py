"""Recall@K, precision@1, R-precision and MAP@R with exact k-NN search (docs/method.md, 'Evaluation').

Definitions are PML's `AccuracyCalculator`'s (averaged over non-lone queries), plus
Recall@K as used in the metric-learning literature. The search runs in blocks of
queries and the metrics are accumulated per block, so memory is bounded by the
block size, never by N^2 or N x K for the whole set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..registry import RegistryView, dataset_spec, list_datasets

METRICS = ("recall", "precision_at_1", "r_precision", "map_at_r")

#: The literature's K for each data set (docs/method.md, 'Evaluation'): a view of the data-set registry, where
#: each data set declares its own.
STANDARD_KS = RegistryView(list_datasets, lambda name: dataset_spec(name).ks)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class _Search:
    """Exact k-NN over a fixed reference set; rows ordered by (distance, index)."""

    reference: torch.Tensor
    backend: str
    metric: str
    device: torch.device

    def __post_init__(self) -> None:
        if self.backend == "faiss":
            import faiss

            # numpy has no bf16: convert in torch (faiss searches in fp32 anyway).
            ref = np.ascontiguousarray(self.reference.detach().to("cpu", torch.float32).numpy())
            index = faiss.IndexFlatL2(ref.shape[1]) if self.metric == "euclidean" else faiss.IndexFlatIP(ref.shape[1])
            if self.device.type == "cuda":  # _pick_backend made sure this faiss has GPU support
                index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.device.index or 0, index)
            index.add(ref)
            self.index = index
        else:
            self.ref = self.reference.detach().to(self.device, torch.float32)
            self.ref_sq = (self.ref * self.ref).sum(dim=1)

    def __call__(self, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) of the k nearest; scores ascend (distance) for both metrics."""
        if self.backend == "faiss":
            q = np.ascontiguousarray(query.detach().to("cpu", torch.float32).numpy())
            dist, idx = self.index.search(q, k)
            dist, idx = torch.from_numpy(dist), torch.from_numpy(idx)
            if self.metric != "euclidean":
                dist = -dist
        else:
            q = query.detach().to(self.device, torch.float32)
            dots = q @ self.ref.T
            if self.metric == "euclidean":
                # Same expansion faiss uses, so both backends round alike.
                scores = (q * q).sum(dim=1, keepdim=True) + self.ref_sq[None, :] - 2.0 * dots
            else:
                scores = -dots
            dist, idx = torch.topk(scores, k, dim=1, largest=False)
        return _sort_rows(dist, idx)


def _sort_rows(dist: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows in ascending distance, equal distances by reference index, the same way in every backend.

    Both backends already return rows sorted by distance; only rows with an exact tie are re-sorted.
    At k in the thousands almost every row has a tie somewhere (float32 distances collide), so a
    sorted row is fixed with one argsort of the key (tie group, index) rather than two argsorts:
    a third of the cost, and the re-sort was two thirds of the whole search."""
    step_down = dist[:, 1:] < dist[:, :-1]
    tied = (dist[:, 1:] == dist[:, :-1]).any(dim=1)
    unsorted = step_down.any(dim=1)
    if not bool((tied | unsorted).any()):
        return dist, idx
    dist, idx = dist.clone(), idx.clone()
    rows = torch.nonzero(tied & ~unsorted).squeeze(1)
    if len(rows):
        d, i = dist[rows], idx[rows]
        group = torch.zeros_like(i)
        group[:, 1:] = (d[:, 1:] != d[:, :-1]).cumsum(dim=1)
        order = torch.argsort(group * (int(i.max()) + 1) + i, dim=1)
        dist[rows], idx[rows] = torch.gather(d, 1, order), torch.gather(i, 1, order)
    rows = torch.nonzero(unsorted).squeeze(1)
    if len(rows):  # not returned sorted: sort by index, then stably by distance
        d, i = dist[rows], idx[rows]
        order = torch.argsort(i, dim=1)
        d, i = torch.gather(d, 1, order), torch.gather(i, 1, order)
        order = torch.argsort(d, dim=1, stable=True)
        dist[rows], idx[rows] = torch.gather(d, 1, order), torch.gather(i, 1, order)
    return dist, idx


def _self_mask(idx: torch.Tensor, query_ids: torch.Tensor) -> torch.Tensor:
    """Column to drop in each row: the query's own index (PML's rule: else the last column)."""
    is_self = idx == query_ids[:, None]
    # Keep only the first occurrence (an index appears once per row, but be safe).
    is_self &= is_self.cumsum(dim=1) == 1
    missing = ~is_self.any(dim=1)
    is_self[missing, -1] = True
    return is_self


def _drop(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[~mask].view(x.shape[0], x.shape[1] - 1)


def _validate(query, query_labels, reference, reference_labels, ks) -> None:
    def check(x, name):
        if not torch.is_tensor(x) or x.ndim != 2:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {shape}")
        if len(x) == 0:
            raise ValueError(f"{name} is empty")

    check(query, "query")
    if query_labels.ndim != 1 or len(query_labels) != len(query):
        raise ValueError(
            f"query_labels must be 1-D with one label per query: {tuple(query_labels.shape)} labels "
            f"for {len(query)} queries"
        )
    if reference is not None:
        check(reference, "reference")
        if reference_labels is None or reference_labels.ndim != 1 or len(reference_labels) != len(reference):
            n = None if reference_labels is None else tuple(reference_labels.shape)
            raise ValueError(f"reference_labels must be 1-D with one label per reference row, got {n} for {len(reference)}")
        if reference.shape[1] != query.shape[1]:
            raise ValueError(f"query has dimension {query.shape[1]} but reference has {reference.shape[1]}")
    if len(ks) == 0 or any((not isinstance(k, (int, np.integer))) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")


def _all_finite(x: torch.Tensor) -> torch.Tensor:
    """0-d tensor: no NaN or infinity in `x` (left on the device, to be read with other values)."""
    if x.dtype == torch.float64:
        return torch.isfinite(x).all()
    # One reduction and no n x d boolean temporary (100 MB at 200,000 x 512): summed in fp64, finite
    # fp32/fp16/bf16 values cannot overflow (n * d * 3.4e38 << 1.8e308), and a NaN or inf survives.
    return torch.isfinite(x.sum(dtype=torch.float64))


def _to_tensor(x) -> torch.Tensor | None:
    if x is None:
        return None
    return x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))


def retrieval_metrics(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    ks: Sequence[int] = (1, 2, 4, 8),
    include: Sequence[str] = METRICS,
    backend: str = "auto",
    device: str | torch.device | None = None,
    metric: str = "euclidean",
    block_size: int | None = None,
) -> dict[str, float]:
    """Retrieval metrics of `query` against `reference` (or against itself, leaving each query out).

    Returns ``recall@K`` for each K (fraction of queries with a same-class item among
    their K nearest), ``precision_at_1``, ``r_precision`` and ``map_at_r`` (PML's
    definitions: R = number of same-class references), averaged over non-lone queries,
    and ``lone_queries`` (queries whose class has no reference). Search is exact:
    ``metric="euclidean"`` (PML's default, faiss IndexFlatL2) or ``"inner_product"``.
    ``backend``: ``"faiss"``, ``"torch"`` (blocked matmul + top-k on any device) or
    ``"auto"`` (torch on CUDA, faiss on CPU). ``"faiss"`` on a CUDA device needs a GPU build of
    faiss (pip's faiss-cpu has none). Ties are ordered by reference index.

    Raises:
        ValueError: for non-2-D or non-finite embeddings, mismatched lengths or
            dimensions, non-positive K, K larger than the reference set, unknown names,
            ``backend="faiss"`` on CUDA without a GPU build of faiss.
    """
    query, query_labels = _to_tensor(query), _to_tensor(query_labels)
    reference, reference_labels = _to_tensor(reference), _to_tensor(reference_labels)
    ks = tuple(int(k) for k in ks)
    _validate(query, query_labels, reference, reference_labels, ks)
    _validate_options(include, metric)
    self_ref = reference is None
    if self_ref:
        reference, reference_labels = query, query_labels
    n_ref = len(reference) - int(self_ref)
    if "recall" in include and max(ks) > n_ref:
        raise ValueError(f"K={max(ks)} is larger than the reference set ({n_ref} items per query)")

    dev = torch.device(device) if device is not None else query.device
    backend = _pick_backend(backend, dev)
    labels = _Labels.of(query_labels, reference_labels, self_ref, dev)
    n_valid, max_r = _checked_counts(query, None if self_ref else reference, labels, dev)
    k_need = 1
    if "recall" in include:
        k_need = max(k_need, max(ks))
    if {"r_precision", "map_at_r"} & set(include) and n_valid:
        k_need = max(k_need, max_r)
    k_need = min(k_need, n_ref)

    search = _Search(reference, backend, metric, dev)
    if block_size is None:
        block_size = max(1, min(len(query), (1 << 26) // max(len(reference), 1)))
    names = [f"recall@{k}" for k in ks] if "recall" in include else []
    names += [m for m in ("precision_at_1", "r_precision", "map_at_r") if m in include]
    sums = _summed_over_blocks(search, query, labels, names, ks, k_need, block_size, dev)
    out = {name: (total / n_valid if n_valid else math.nan) for name, total in zip(names, sums.tolist())}
    out["lone_queries"] = int(len(query) - n_valid)
    return out


def _validate_options(include: Sequence[str], metric: str) -> None:
    unknown = set(include) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    if metric not in ("euclidean", "inner_product"):
        raise ValueError(f"metric must be 'euclidean' or 'inner_product', got {metric!r}")


@dataclass
class _Labels:
    """The labels on the search's device, and per query R, its number of same-class references
    (minus the query itself when the queries are the references); R = 0 means lone."""

    query: torch.Tensor
    reference: torch.Tensor
    r_per_query: torch.Tensor
    not_lone: torch.Tensor
    self_ref: bool

    @classmethod
    def of(cls, query_labels: torch.Tensor, reference_labels: torch.Tensor, self_ref: bool,
           dev: torch.device) -> "_Labels":
        def on_dev(labels: torch.Tensor) -> torch.Tensor:
            return labels.to(dev).long() if labels.dtype != torch.long else labels.to(dev)

        labels_q, labels_r = on_dev(query_labels), on_dev(reference_labels)
        uniq, inverse = torch.unique(torch.cat([labels_q, labels_r]), return_inverse=True)
        ref_counts = torch.bincount(inverse[len(labels_q):], minlength=len(uniq))
        r_per_query = ref_counts[inverse[: len(labels_q)]] - int(self_ref)
        return cls(labels_q, labels_r, r_per_query, r_per_query > 0, self_ref)


def _checked_counts(query: torch.Tensor, reference: torch.Tensor | None, labels: _Labels,
                    dev: torch.device) -> tuple[int, int]:
    """The number of non-lone queries and the largest R; ValueError for NaN or infinite embeddings
    (`reference` None: the queries are the references)."""
    # Every read of a device value waits for the device: the finiteness checks, the number of
    # non-lone queries and the largest R are read together, once (on CUDA each read is a sync).
    checks = [_all_finite(query)] + ([] if reference is None else [_all_finite(reference)])
    not_lone, r = labels.not_lone, labels.r_per_query
    head = torch.stack([c.to(dev) for c in checks] + [not_lone.sum(), torch.where(not_lone, r, 0).max()])
    *finite, n_valid, max_r = head.tolist()
    for ok, name in zip(finite, ("query", "reference")):
        if not ok:
            raise ValueError(f"{name} contains NaN or infinite values")
    return n_valid, max_r


def _summed_over_blocks(search: _Search, query: torch.Tensor, labels: _Labels, names: list[str],
                        ks: tuple[int, ...], k_need: int, block_size: int, dev: torch.device) -> torch.Tensor:
    """Each metric in `names` summed over the non-lone queries, searching `block_size` queries at a time."""
    self_ref = labels.self_ref
    # Per-block sums stay on the device (fp64, added in block order) and are read once at the end,
    # not once per metric per block (each read is a sync on CUDA: 7 metrics x 55 blocks at SOP size).
    sums = torch.zeros(len(names), dtype=torch.float64, device=dev)
    for q0 in range(0, len(query), block_size):
        q1 = min(len(query), q0 + block_size)
        _, idx = search(query[q0:q1], k_need + int(self_ref))
        idx = idx.to(dev)
        if self_ref:
            idx = _drop(idx, _self_mask(idx, torch.arange(q0, q1, device=dev)))
        valid = labels.not_lone[q0:q1]
        same = labels.reference[idx] == labels.query[q0:q1, None]
        sums += _block_sums(names, same, labels.r_per_query[q0:q1], valid, ks)
    return sums


def _block_sums(names: list[str], same: torch.Tensor, r: torch.Tensor, valid: torch.Tensor,
                ks: tuple[int, ...]) -> torch.Tensor:
    """Sums over the block's non-lone queries of each metric in `names` (same: queries x k, ordered
    neighbours). Lone queries are masked rather than dropped: boolean indexing would read its
    size back from the device."""
    same = same & valid[:, None]
    parts = {f"recall@{k}": same[:, :k].any(dim=1).sum() for k in ks if f"recall@{k}" in names}
    if "precision_at_1" in names:
        parts["precision_at_1"] = same[:, 0].sum()
    if "r_precision" in names or "map_at_r" in names:
        cols = torch.arange(same.shape[1], device=same.device)
        hits = same & (cols[None, :] < r[:, None])
        rf = r.clamp(min=1).to(torch.float64)  # lone rows: R = 0, no hits, 0 / 1 = 0
        if "r_precision" in names:
            parts["r_precision"] = (hits.sum(dim=1) / rf).sum()
        if "map_at_r" in names:
            cum = hits.cumsum(dim=1).to(torch.float64)
            prec = cum / (cols[None, :] + 1).to(torch.float64)
            parts["map_at_r"] = ((prec * hits).sum(dim=1) / rf).sum()
    return torch.stack([parts[n].to(torch.float64) for n in names])


def _pick_backend(backend: str, device: torch.device) -> str:
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if backend == "auto":
        return "torch" if device.type == "cuda" or not faiss_available() else "faiss"
    if backend == "faiss" and not faiss_available():
        raise ValueError("backend='faiss' needs the faiss-cpu package installed")
    if backend == "faiss" and device.type == "cuda" and not faiss_gpu_available():
        raise ValueError(f"backend='faiss' on device {str(device)!r} needs a GPU build of faiss, and this faiss "
                         "has no GPU support: use backend='torch' (the default on CUDA) or device='cpu'")
    return backend


def faiss_gpu_available() -> bool:
    """faiss is a GPU build (pip's faiss-cpu is not; docs/metrics.md names the official GPU package)."""
    import faiss

    return hasattr(faiss, "StandardGpuResources")


class TorchKNN:
    """A PML-compatible knn_func: ``knn(query, k, reference, ref_includes_query) -> (D, I)``."""

    def __init__(self, backend: str = "auto", metric: str = "euclidean", device=None) -> None:
        self.backend, self.metric, self.device = backend, metric, device

    def __call__(self, query, k, reference, ref_includes_query=False):
        dev = torch.device(self.device) if self.device is not None else query.device
        search = _Search(reference, _pick_backend(self.backend, dev), self.metric, dev)
        dist, idx = search(query, k + int(ref_includes_query))
        dist, idx = dist.to(query.device), idx.to(query.device)
        if ref_includes_query:
            mask = _self_mask(idx, torch.arange(len(query), device=idx.device))
            dist, idx = _drop(dist, mask), _drop(idx, mask)
        return dist, idx
