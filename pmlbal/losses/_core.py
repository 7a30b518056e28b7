"""Shared machinery of every pmlbal loss: pair bookkeeping, masked reductions, row blocks.

The losses never build PML's [#pos_pairs x #neg_pairs] tensors. Pairs are held as
dense B x M *count* matrices, built one block of anchor rows at a time, so memory is
O(B*M) without chunking and O(chunk*M) with it. Counts (not 0/1 masks) keep a
miner's duplicated pairs (triplets sharing an (anchor, negative)) weighted exactly
as PML weights them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from pytorch_metric_learning.distances import BaseDistance, LpDistance
from torch.utils.checkpoint import checkpoint

IndicesTuple = tuple[torch.Tensor, ...]


class Pairs:
    """Positive and negative pairs of (anchor row, reference column), block by block.

    Built from labels (every same-label pair is positive, every other pair negative,
    self-pairs excluded when `exclude_self`), or from a miner's `indices_tuple`
    (pairs `(a1, p, a2, n)` or triplets `(a, p, n)`, PML's convention).
    Pair lists are ordered by anchor, which is what lets a block of rows find its
    own pairs by `searchsorted`.
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        device: torch.device,
        labels: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        exclude_self: bool = False,
    ) -> None:
        self.n_rows, self.n_cols, self.device = n_rows, n_cols, device
        self.exclude_self = exclude_self
        self.from_labels = indices_tuple is None
        if self.from_labels:
            if labels is None or ref_labels is None:
                raise ValueError("labels are required when no indices_tuple is given")
            self.labels = labels.to(device)
            self.ref_labels = ref_labels.to(device)
            self._pos: tuple[torch.Tensor, torch.Tensor] | None = None
            self._neg: tuple[torch.Tensor, torch.Tensor] | None = None
        else:
            a1, p, a2, n = _as_pairs(indices_tuple)
            self._pos = _sort_by_anchor(a1.to(device), p.to(device))
            self._neg = _sort_by_anchor(a2.to(device), n.to(device))

    # -- pair lists ------------------------------------------------------------
    def pos_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos is None:
            self._pos = self._pairs_from_labels(positive=True)
        return self._pos

    def neg_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._neg is None:
            self._neg = self._pairs_from_labels(positive=False)
        return self._neg

    def num_pos(self) -> int:
        return len(self.pos_pairs()[0])

    def num_neg(self) -> int:
        if self.from_labels and self._neg is None:
            # Counting does not need the (possibly huge) negative index lists.
            return int(self.n_rows * self.n_cols - self.num_pos() - self._num_self())
        return len(self.neg_pairs()[0])

    def _num_self(self) -> int:
        return min(self.n_rows, self.n_cols) if self.exclude_self else 0

    def _pairs_from_labels(self, positive: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = [], []
        step = max(1, (1 << 24) // max(self.n_cols, 1))
        for r0 in range(0, self.n_rows, step):
            r1 = min(self.n_rows, r0 + step)
            mask = self._label_mask(r0, r1, positive)
            r, c = torch.where(mask)
            rows.append(r + r0)
            cols.append(c)
        if not rows:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            return empty, empty
        if len(rows) == 1:  # torch.cat would copy: the negative lists can hold ~B^2 pairs
            return rows[0], cols[0]
        return torch.cat(rows), torch.cat(cols)

    def pos_slice(self, r0: int, r1: int) -> slice:
        return _anchor_range(self.pos_pairs()[0], r0, r1, self.n_rows)

    def neg_slice(self, r0: int, r1: int) -> slice:
        return _anchor_range(self.neg_pairs()[0], r0, r1, self.n_rows)

    # -- dense blocks ----------------------------------------------------------
    def same_label(self, r0: int, r1: int) -> torch.Tensor:
        """(r1-r0) x M: anchor and reference share a label (self-pairs included)."""
        return self.labels[r0:r1, None] == self.ref_labels[None, :]

    def _label_mask(self, r0: int, r1: int, positive: bool) -> torch.Tensor:
        same = self.same_label(r0, r1)
        return self._drop_self(same, r0) if positive else ~same

    def _drop_self(self, same: torch.Tensor, r0: int) -> torch.Tensor:
        if self.exclude_self:
            # Row k of the block is anchor r0 + k: its self-pair is column r0 + k, the diagonal at
            # offset r0 (one fill, where index lists cost an arange, a shift and a scatter).
            same.diagonal(offset=r0).fill_(False)
        return same

    def block(self, r0: int, r1: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos, neg) for anchor rows r0..r1, each (r1-r0) x M.

        Boolean masks when built from labels (the cheap common case); pair counts of
        `dtype` when built from a miner's pairs, where a pair may appear twice.
        """
        if self.from_labels:
            same = self.same_label(r0, r1)  # once for both masks
            neg = ~same
            return self._drop_self(same, r0), neg
        return (
            self._count_block(self.pos_pairs(), self.pos_slice(r0, r1), r0, r1, dtype),
            self._count_block(self.neg_pairs(), self.neg_slice(r0, r1), r0, r1, dtype),
        )

    def _count_block(self, pairs, sl: slice, r0: int, r1: int, dtype) -> torch.Tensor:
        counts = torch.zeros(r1 - r0, self.n_cols, dtype=dtype, device=self.device)
        a, o = pairs[0][sl] - r0, pairs[1][sl]
        counts.index_put_((a, o), torch.ones(len(a), dtype=dtype, device=self.device), accumulate=True)
        return counts

    def is_trivial(self) -> bool:
        """PML's GenericPairLoss returns zero when every index list has <= 1 entry."""
        return self.num_pos() <= 1 and self.num_neg() <= 1


@dataclass(frozen=True)
class Block:
    """Anchor rows r0..r1 against every reference: what a loss's block math sees.

    `mat` is the block's (r1-r0) x M distance or similarity matrix, in the compute dtype.
    Pair masks and the block's slice of the pair lists are built only when asked for:
    a loss that does not need them (the dense contrastive path) pays nothing.
    """

    mat: torch.Tensor
    pairs: Pairs
    r0: int
    r1: int

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos, neg): boolean masks from labels, pair counts in `mat`'s dtype from a miner."""
        return self.pairs.block(self.r0, self.r1, self.mat.dtype)

    def same_label(self) -> torch.Tensor:
        return self.pairs.same_label(self.r0, self.r1)

    def pos_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in the block, reference column) of the block's positive pairs, in `pos_pairs()` order."""
        a, o = self.pairs.pos_pairs()
        sl = self.pairs.pos_slice(self.r0, self.r1)
        return _shift(a[sl], self.r0), o[sl]

    def neg_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in the block, reference column) of the block's negative pairs, in `neg_pairs()` order."""
        a, o = self.pairs.neg_pairs()
        sl = self.pairs.neg_slice(self.r0, self.r1)
        return _shift(a[sl], self.r0), o[sl]


def _shift(rows: torch.Tensor, r0: int) -> torch.Tensor:
    # The unchunked block starts at 0: skip a pass over its (up to ~B^2) pair rows.
    return rows if r0 == 0 else rows - r0


def _as_pairs(indices_tuple: Sequence[torch.Tensor]) -> IndicesTuple:
    if len(indices_tuple) == 4:
        return tuple(torch.as_tensor(x).long() for x in indices_tuple)
    if len(indices_tuple) == 3:
        a, p, n = (torch.as_tensor(x).long() for x in indices_tuple)
        return a, p, a, n
    raise ValueError(
        f"indices_tuple must hold 3 (anchor, positive, negative) or 4 (a1, p, a2, n) "
        f"tensors, got {len(indices_tuple)}"
    )


def _sort_by_anchor(a: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(a, stable=True)
    return a[order], o[order]


def _anchor_range(sorted_anchors: torch.Tensor, r0: int, r1: int, n_rows: int) -> slice:
    if r0 <= 0 and r1 >= n_rows:
        # The unchunked block holds every anchor (all lie in [0, n_rows)): the whole list, without
        # reading searchsorted's bounds back, which on CUDA is a host sync in every loss call.
        return slice(0, len(sorted_anchors))
    bounds = torch.searchsorted(
        sorted_anchors, torch.tensor([r0, r1], device=sorted_anchors.device, dtype=sorted_anchors.dtype)
    )
    lo, hi = bounds.tolist()
    return slice(lo, hi)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 similarities are promoted to fp32 for exp/log; fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def distance_matrix(distance: BaseDistance, q: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """`distance(q, refs)`, with an Lp distance of fp16/bf16 embeddings taken from fp32 copies.

    PML's LpDistance has no usable low-precision path: torch.cdist has no bf16 kernel on the
    CPU for small inputs, and its fp16 fallback gathers every (query, ref) pair into a
    B x M x D tensor. The fp32 copies cost O((B + M) D); the B x M matrix is promoted anyway.
    """
    if isinstance(distance, LpDistance) and q.dtype in (torch.float16, torch.bfloat16):
        q, refs = q.float(), refs.float()
    return distance(q, refs)


def as_mask(weight: torch.Tensor) -> torch.Tensor:
    """Boolean view of a mask or a pair-count matrix."""
    return weight if weight.dtype == torch.bool else weight > 0


def masked_logsumexp(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise log(sum_j weight_ij * exp(x_ij)) over entries with weight > 0.

    `weight` is a boolean mask or a count matrix. Returns (lse, has_any). Rows
    without any entry get lse = 0 and a gradient of exactly 0 (no inf * 0 = NaN).
    """
    keep = as_mask(weight)
    has_any = keep.any(dim=1)
    x = x.masked_fill(~keep, float("-inf"))
    row_max = x.amax(dim=1, keepdim=True).detach()
    # Empty rows (max -inf) shift by 0. Scalars in where, one nan_to_num: on a GPU a step of a few
    # ms is kernel launches, and each zeros_like/isfinite is one or more of them.
    row_max = torch.nan_to_num(row_max, nan=0.0, posinf=0.0, neginf=0.0)
    e = torch.exp(x - row_max)
    total = (e if weight.dtype == torch.bool else weight * e).sum(dim=1)
    safe = torch.where(has_any, total, 1.0)
    lse = torch.where(has_any, torch.log(safe) + row_max.squeeze(1), 0.0)
    return lse, has_any


def masked_mean(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise weighted mean of x (boolean mask or counts); rows with no weight give 0."""
    if weight.dtype == torch.bool:
        total = weight.sum(dim=1).to(x.dtype)
        weighted = x.masked_fill(~weight, 0.0).sum(dim=1)
    else:
        total = weight.sum(dim=1)
        weighted = (weight * x).sum(dim=1)
    has_any = total > 0
    return weighted / torch.where(has_any, total, torch.ones_like(total)), has_any


def map_row_blocks(
    fn: Callable[..., tuple[torch.Tensor, ...]],
    queries: torch.Tensor,
    refs: torch.Tensor,
    chunk_size: int | None,
) -> tuple[torch.Tensor, ...]:
    """Apply `fn(query_block, refs, r0, r1)` to blocks of query rows and concatenate.

    With `chunk_size`, each block runs under activation checkpointing, so only one
    block's B_chunk x M intermediates live at a time, in forward and in backward;
    peak memory then grows linearly with the batch size.
    """
    n = queries.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(queries, refs, 0, n)
    outputs: list[tuple[torch.Tensor, ...]] = []
    use_ckpt = torch.is_grad_enabled() and (queries.requires_grad or refs.requires_grad)
    for r0 in range(0, n, chunk_size):
        r1 = min(n, r0 + chunk_size)
        if use_ckpt:
            out = checkpoint(fn, queries[r0:r1], refs, r0, r1, use_reentrant=False)
        else:
            out = fn(queries[r0:r1], refs, r0, r1)
        outputs.append(out)
    return tuple(torch.cat(parts) for parts in zip(*outputs))


class _HingeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mat, skip, offset: float, sign: float):
        t = mat - offset if sign > 0 else offset - mat
        t = t.masked_fill_(skip, 0.0).relu_()
        active = t > 0
        ctx.save_for_backward(active)
        ctx.sign = sign
        count = active.sum()
        ctx.mark_non_differentiable(count)
        return t.sum(), count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sum, _grad_count):
        (active,) = ctx.saved_tensors
        return active * (grad_sum * ctx.sign), None, None, None


def hinge_sum(mat: torch.Tensor, skip: torch.Tensor, offset: float, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count of non-zero) of relu(sign * mat - sign * offset) over entries where `skip` is False.

    One pass per direction, and backward keeps a boolean mask of the active entries rather than
    a float B x M tensor: the hinge terms of a margin loss over all ~B^2 negative pairs.
    """
    return _HingeSum.apply(mat, skip, float(offset), float(sign))


def detached_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean for the recorded loss terms: detached, no host sync; 0 when empty."""
    x = x.detach()
    if mask is not None:
        count = mask.sum()
        return torch.where(mask, x, 0.0).sum() / count.clamp(min=1)
    if x.numel() == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return x.mean()


def nonzero_mean(x: torch.Tensor) -> torch.Tensor:
    """Detached mean of the non-zero entries (zeros add nothing to the sum)."""
    x = x.detach()
    return x.sum() / torch.count_nonzero(x).clamp(min=1)
