"""Balanced contrastive (margin) loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer, MultipleReducers

from ..registry import register
from ._core import Block, detached_mean, hinge_sum, nonzero_mean
from .base import Batch, Output, PMLCompatibleLoss, check_choice


@register("loss", tune={"balance": ("log", 1 / 16, 16), "pos_margin": ("linear", 0.0, 0.8, 0.1, 0.025),
                        "neg_margin": ("linear", 0.2, 1.8, 0.1, 0.025)})
class BalancedContrastiveLoss(PMLCompatibleLoss):
    """Contrastive margin loss with an explicit balance and a choice of aggregation::

        pos_l = [d_ip - pos_margin]_+   (positive pairs)     neg_l = [neg_margin - d_in]_+   (negative pairs)
        "nonzero": mean of non-zero pos_l + balance * mean of non-zero neg_l   (PML's default)
        "mean":    mean of pos_l + balance * mean of neg_l   (balance independent of batch size)
        "pooled":  (sum pos_l + balance * sum neg_l) / (|P| + |N|)   (the usual hidden form)

    Sub-losses ``pos_loss`` (``pos_pair``) and ``neg_loss`` (``neg_pair``) exactly as
    PML's ``ContrastiveLoss``; the aggregation only picks the default reducer and a
    constant weight per sub-loss, so a user's reducer keeps working. With
    ``balance=1, aggregation="nonzero"`` it equals PML's ``ContrastiveLoss`` for any
    distance, reducer or miner.

    Args:
        pos_margin, neg_margin: margins in the units of the distance (default 0 and 1).
        balance: weight of the negative term, >= 0.
        aggregation: ``"nonzero"``, ``"mean"`` or ``"pooled"``.
        chunk_size: anchor rows per checkpointed block (None: one block).

    Examples:
        >>> import torch, pmlbal
        >>> loss = pmlbal.losses.BalancedContrastiveLoss(aggregation="mean")(torch.randn(8, 4), torch.arange(8) % 2)
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        balance: float = 1.0,
        aggregation: str = "nonzero",
        chunk_size: int | None = None,
        **kwargs,
    ):
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.aggregation = check_choice("aggregation", aggregation, ("nonzero", "mean", "pooled"))
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def get_default_reducer(self):
        return AvgNonZeroReducer() if self.aggregation == "nonzero" else MeanReducer()

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def _compute_loss(self, batch: Batch) -> Output:
        if batch.pairs.from_labels and self._default_reduction():
            return self._dense_loss(batch)

        def block(b: Block):
            (pr, pc), (nr, nc) = b.pos_index(), b.neg_index()
            pos_l = torch.relu(self.distance.margin(b.mat[pr, pc], self.pos_margin))
            neg_l = torch.relu(self.distance.margin(self.neg_margin, b.mat[nr, nc]))
            return pos_l, neg_l

        pos_l, neg_l = self.map_blocks(block, batch)
        n_pos, n_neg = len(pos_l), len(neg_l)
        w_pos, w_neg = self._term_weights(n_pos, n_neg)
        term = nonzero_mean if self.aggregation == "nonzero" else detached_mean
        losses = {
            "pos_loss": {
                "losses": _scale(pos_l, w_pos) if n_pos else 0,
                "indices": batch.pairs.pos_pairs(),
                "reduction_type": "pos_pair",
            },
            "neg_loss": {
                "losses": _scale(neg_l, w_neg) if n_neg else 0,
                "indices": batch.pairs.neg_pairs(),
                "reduction_type": "neg_pair",
            },
        }
        return Output(losses, term(pos_l), term(neg_l))

    def _term_weights(self, n_pos: int, n_neg: int) -> tuple[float, float]:
        if self.aggregation == "pooled" and n_pos + n_neg > 0:
            # Under the mean reducer these weights turn the two means into one pooled mean.
            return n_pos / (n_pos + n_neg), self.balance * n_neg / (n_pos + n_neg)
        return 1.0, self.balance

    def _default_reduction(self) -> bool:
        """True when the reducer is the one the aggregation implies, without statistics: the
        loss can then be reduced here, densely, with no list of the ~B^2 negative pairs."""
        want = AvgNonZeroReducer if self.aggregation == "nonzero" else MeanReducer
        if type(self.distance).margin is not BaseDistance.margin:
            return False  # hinge_sum hard-codes PML's margin
        outer = self.reducer  # PML wraps one reducer per sub-loss in MultipleReducers
        if type(outer) is not MultipleReducers or outer.collect_stats:
            return False
        for name in self._sub_loss_names():
            r = outer.reducers[name] if name in outer.reducers else outer.default_reducer
            if type(r) is not want or r.collect_stats:
                return False
            if want is AvgNonZeroReducer and not (r.low == 0 and r.high is None):
                return False
        return True

    def _dense_loss(self, batch: Batch) -> Output:
        """Labels-defined pairs under the default reducer: positives from their (short) index
        list, negatives as a masked B x M block, each block reduced to sums and counts.

        Same values and gradients as the per-pair path; PML's reducer receives them as
        "already_reduced" sub-losses. Skips building and gathering the negative index lists,
        which dominate PML's time and memory."""
        # margin(neg_margin, d) is neg_margin - d, or d - neg_margin for similarities.
        sign = 1.0 if self.distance.is_inverted else -1.0

        def block(b: Block):
            pos_l = torch.relu(self.distance.margin(b.mat[b.pos_index()], self.pos_margin))
            neg_sum, neg_nz = hinge_sum(b.mat, b.same_label(), self.neg_margin, sign)
            return (pos_l.sum().reshape(1), torch.count_nonzero(pos_l).reshape(1),
                    neg_sum.reshape(1), neg_nz.reshape(1))

        pos_sum, pos_nz, neg_sum, neg_nz = (x.sum() for x in self.map_blocks(block, batch))
        n_pos, n_neg = batch.pairs.num_pos(), batch.pairs.num_neg()
        if self.aggregation == "nonzero":
            pos, neg = pos_sum / pos_nz.clamp(min=1), neg_sum / neg_nz.clamp(min=1)
        else:
            pos, neg = pos_sum / max(n_pos, 1), neg_sum / max(n_neg, 1)
        w_pos, w_neg = self._term_weights(n_pos, n_neg)
        losses = {
            "pos_loss": {"losses": _scale(pos, w_pos) if n_pos else 0, "indices": None,
                         "reduction_type": "already_reduced"},
            "neg_loss": {"losses": _scale(neg, w_neg) if n_neg else 0, "indices": None,
                         "reduction_type": "already_reduced"},
        }
        return Output(losses, pos, neg)

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        if self.aggregation == "pooled":
            return self.balance * (batch_size - samples_per_class) / (samples_per_class - 1)
        return self.balance


def _scale(losses: torch.Tensor, weight: float) -> torch.Tensor:
    # Skipping the multiply at weight 1 saves a pass over ~B^2 negative-pair losses.
    return losses if weight == 1.0 else losses * weight
