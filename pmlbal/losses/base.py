"""BalancedLoss: the PML base class every pmlbal loss derives from, and the template it fills."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from ._core import Block, Pairs, compute_dtype, distance_matrix, map_row_blocks


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


class Refs(enum.Enum):
    """Where a call's references r_j come from, decided once from what the caller passed."""

    BATCH = "batch"  # no ref_emb: the batch is its own reference set, (i, i) pairs excluded (docs/method.md, 'Conventions')
    SEPARATE = "separate"  # ref_emb given (a second view, a memory bank, other ranks' rows): every pair counts


@dataclass(frozen=True)
class Batch:
    """One call's inputs once the template has resolved the references and the pairs."""

    embeddings: torch.Tensor
    labels: torch.Tensor | None
    ref_emb: torch.Tensor
    ref_labels: torch.Tensor | None
    refs: Refs
    pairs: Pairs


class Output(NamedTuple):
    """What a loss's `_compute_loss` returns: PML's loss dict and the batch means of its two terms."""

    losses: dict
    pos_term: torch.Tensor
    entropy_term: torch.Tensor


class BalancedLoss(BaseMetricLossFunction):
    """A PML loss with an explicit `balance` and recorded positive / entropy terms.

    `compute_loss` is the shared template (as PML's `GenericPairLoss.compute_loss`): it
    resolves the references (`Refs`: self-pairs are excluded only when the caller passed
    no `ref_emb`), turns labels or a miner's `indices_tuple` into `Pairs`, returns PML's
    zero loss on batches the loss cannot use, and records the terms. A subclass writes
    only its math, in `_compute_loss(batch) -> Output`, usually as a function of one
    `Block` of anchor rows run through `map_blocks`. After every forward, `pos_term` and
    `entropy_term` hold the batch means of the two terms (detached tensors; PML
    recordable attributes), whatever reducer is used. Non-finite `embeddings` or `ref_emb`
    raise a ValueError unless the loss was built with ``check_finite=False``.
    """

    zero_when_trivial = False  # PML's GenericPairLoss: zero loss when every pair list has <= 1 entry
    needs_pos_and_neg = False  # zero loss unless the batch has a positive and a negative pair

    def __init__(self, balance: float = 1.0, chunk_size: int | None = None, check_finite: bool = True,
                 **kwargs) -> None:
        self.balance = check_nonnegative("balance", balance)
        self.chunk_size = check_chunk_size(chunk_size)
        if not isinstance(check_finite, bool):
            raise ValueError(f"check_finite must be True or False, got {check_finite!r}")
        # A NaN or inf embedding would give a NaN loss and NaN gradients, silently. The check costs
        # one host sync per call; `check_finite=False` skips it (a trainer that checks its losses).
        self.check_finite = check_finite
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["balance"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["pos_term", "entropy_term"], is_stat=False)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        # PML's forward, except that an omitted ref_emb reaches compute_loss as None: PML
        # substitutes the embeddings first, after which only object identity could tell.
        _check_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if self.check_finite:
            _check_finite(embeddings, ref_emb)
        self.reset_stats()
        if labels is not None:
            labels = c_f.to_device(labels, embeddings)
        if ref_emb is not None and ref_labels is not None:
            ref_labels = c_f.to_device(ref_labels, ref_emb)
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        return self.reducer(loss_dict, embeddings, labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        refs = Refs.BATCH if ref_emb is None else Refs.SEPARATE
        if refs is Refs.BATCH:
            ref_emb, ref_labels = embeddings, labels
        pairs = Pairs(
            embeddings.shape[0],
            ref_emb.shape[0],
            embeddings.device,
            labels=labels,
            ref_labels=ref_labels,
            indices_tuple=indices_tuple,
            exclude_self=self.excludes_self(refs, labels, ref_labels),
        )
        empty = embeddings.shape[0] == 0 or ref_emb.shape[0] == 0  # no pair at all (DHEL's max would fail)
        if empty or (self.zero_when_trivial and pairs.is_trivial()) or (
            self.needs_pos_and_neg and (pairs.num_pos() == 0 or pairs.num_neg() == 0)
        ):
            self.pos_term = self.entropy_term = torch.zeros((), device=embeddings.device)
            return self.zero_losses()
        out = self._compute_loss(Batch(embeddings, labels, ref_emb, ref_labels, refs, pairs))
        self.pos_term, self.entropy_term = out.pos_term.detach(), out.entropy_term.detach()
        return out.losses

    def excludes_self(self, refs: Refs, labels, ref_labels) -> bool:
        """Whether the (i, i) pairs are left out: when the batch is its own reference set (docs/method.md, 'Conventions')."""
        return refs is Refs.BATCH

    def _compute_loss(self, batch: Batch) -> Output:
        raise NotImplementedError

    def map_blocks(self, fn: Callable[[Block], tuple[torch.Tensor, ...]], batch: Batch) -> tuple[torch.Tensor, ...]:
        """`fn(block)` over blocks of `chunk_size` anchor rows (checkpointed), outputs concatenated."""

        def run(q, refs, r0, r1):
            return fn(Block(self.pair_matrix(q, refs), batch.pairs, r0, r1))

        return map_row_blocks(run, batch.embeddings, batch.ref_emb, self.chunk_size)

    def pair_matrix(self, q: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        """Distances (or similarities) of a block of queries to the references, in a safe dtype."""
        mat = distance_matrix(self.distance, q, refs)
        return mat.to(compute_dtype(mat.dtype))

    def logits(self, mat: torch.Tensor, temperature: float) -> torch.Tensor:
        """Similarity / temperature; distances are negated, as PML does."""
        return (mat if self.distance.is_inverted else -mat) / temperature

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        """Entropy-to-positive gradient weight ratio implied at the uninformed point (see `effective_balance`)."""
        raise NotImplementedError


class PMLCompatibleLoss(BalancedLoss):
    """A balanced loss with a PML counterpart (a `GenericPairLoss`): a true drop-in at balance 1.

    As PML, a batch whose positive and negative pair lists both hold at most one pair gives zero,
    and the (i, i) pairs are left out whenever `ref_labels` *is* the `labels` object, even with a
    separate `ref_emb` (PML's `get_matches_and_diffs`; in a two-view call that removes every
    positive, which is why PML has `SelfSupervisedLoss`). A user who swaps PML's class for this
    one keeps PML's numbers in every call form; pass `ref_labels=labels.clone()` for the pairs.
    """

    zero_when_trivial = True

    def excludes_self(self, refs: Refs, labels, ref_labels) -> bool:
        return refs is Refs.BATCH or (labels is not None and ref_labels is labels)


def _check_finite(embeddings: torch.Tensor, ref_emb: torch.Tensor | None) -> None:
    for name, x in (("embeddings", embeddings), ("ref_emb", ref_emb)):
        if x is not None and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            rows = (~torch.isfinite(x)).any(dim=1)
            raise ValueError(f"{name} has {int(rows.sum())} row(s) with NaN or infinite values (first row "
                             f"{int(rows.nonzero()[0, 0])}); the loss and its gradients "
                             f"would be NaN (pass check_finite=False to skip this check)")


def _check_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels) -> None:
    if not torch.is_tensor(embeddings) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if torch.is_tensor(embeddings) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a 2-D tensor (batch, dim), got {shape}")
    for name, x in (("embeddings", embeddings), ("ref_emb", ref_emb)):
        if torch.is_tensor(x) and not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
                             f"got {x.dtype}")
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
