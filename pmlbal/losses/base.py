"""BalancedLoss: the PML base class every pmlbal loss derives from."""

from __future__ import annotations

import math
from typing import Callable

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from ._core import Pairs, compute_dtype, distance_matrix, map_row_blocks


def check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


class BalancedLoss(BaseMetricLossFunction):
    """A PML loss with an explicit `balance` and recorded positive / entropy terms.

    Subclasses implement `_compute(embeddings, ref_emb, pairs, ...)`. After every
    forward, `pos_term` and `entropy_term` hold the batch means of the two terms
    (detached tensors; PML recordable attributes), whatever reducer is used.
    """

    def __init__(self, balance: float = 1.0, chunk_size: int | None = None, **kwargs) -> None:
        self.balance = check_nonnegative("balance", balance)
        self.chunk_size = check_chunk_size(chunk_size)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["balance"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["pos_term", "entropy_term"], is_stat=False)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        _check_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def make_pairs(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Pairs:
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        return Pairs(
            embeddings.shape[0],
            ref_emb.shape[0],
            embeddings.device,
            labels=labels,
            ref_labels=ref_labels,
            indices_tuple=indices_tuple,
            exclude_self=self.excludes_self_pairs(embeddings, labels, ref_emb, ref_labels),
        )

    def excludes_self_pairs(self, embeddings, labels, ref_emb, ref_labels) -> bool:
        """Whether (i, i) is dropped: only when the reference set is the batch itself."""
        return ref_emb is embeddings

    def same_view_reduce(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Per row i of `x`: reduce(values(x_i, x), mask of rows j != i with another label).

        The two-view losses' uniformity / energy terms, which see one view at a time.
        """
        pairs = Pairs(len(x), len(x), x.device, labels=labels, ref_labels=labels, exclude_self=True)

        def block(q, refs, r0, r1):
            v = values(q, refs)
            _, neg = pairs.block(r0, r1, v.dtype)
            return reduce(v, neg)[:1]

        return map_row_blocks(block, x, x, self.chunk_size)[0]

    def record_terms(self, pos_term: torch.Tensor, entropy_term: torch.Tensor) -> None:
        self.pos_term = pos_term
        self.entropy_term = entropy_term

    def pair_matrix(self, q: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        """The distance (or similarity) matrix of a block of queries against the references."""
        return distance_matrix(self.distance, q, refs)

    def logits(self, mat: torch.Tensor, temperature: float) -> torch.Tensor:
        """Similarity / temperature in a safe dtype; distances are negated, as PML does."""
        mat = mat.to(compute_dtype(mat.dtype))
        if not self.distance.is_inverted:
            mat = -mat
        return mat / temperature

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        """Entropy-to-positive gradient weight ratio implied at the uninformed point (see `effective_balance`)."""
        raise NotImplementedError


class PMLCompatibleLoss(BalancedLoss):
    """A balanced loss with a PML counterpart: PML's quirks are kept, so it is a true drop-in."""

    def excludes_self_pairs(self, embeddings, labels, ref_emb, ref_labels) -> bool:
        # PML decides by the *labels* object: passing ref_labels=labels with a separate
        # ref_emb drops the (i, i) pairs there too, so we must as well.
        return ref_labels is labels


def _check_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels) -> None:
    if not torch.is_tensor(embeddings) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if torch.is_tensor(embeddings) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a 2-D tensor (batch, dim), got {shape}")
    if labels is not None:
        if not torch.is_tensor(labels):
            raise ValueError(f"labels must be a tensor, got {type(labels).__name__}")
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"labels has {labels.shape[0]} entries but embeddings has {embeddings.shape[0]} rows"
            )
    if ref_emb is not None:
        if not torch.is_tensor(ref_emb) or ref_emb.ndim != 2:
            raise ValueError("ref_emb must be a 2-D tensor (n_ref, dim)")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_emb has dimension {ref_emb.shape[1]} but embeddings has {embeddings.shape[1]}"
            )
        if ref_labels is not None and (ref_labels.ndim != 1 or ref_labels.shape[0] != ref_emb.shape[0]):
            raise ValueError(
                f"ref_labels must be 1-D with {ref_emb.shape[0]} entries, got shape {tuple(ref_labels.shape)}"
            )
        if labels is not None and ref_labels is None and indices_tuple is None:
            raise ValueError("ref_labels is required with ref_emb and labels")
    if indices_tuple is not None and len(indices_tuple) not in (3, 4):
        raise ValueError(
            f"indices_tuple must hold 3 (a, p, n) or 4 (a1, p, a2, n) tensors, got {len(indices_tuple)}"
        )
