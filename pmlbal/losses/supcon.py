"""Balanced supervised contrastive loss (SupCon with an explicit balance)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils import common_functions as c_f

from ..registry import register
from ._core import Block, as_mask, detached_mean, masked_logsumexp, masked_mean
from .base import Batch, Output, PMLCompatibleLoss, check_positive
from .reducers import NonZeroMeanReducer


@register("loss", tune={"balance": ("log", 1 / 16, 16), "temperature": ("log", 1 / 64, 1.0)})
class BalancedSupConLoss(PMLCompatibleLoss):
    """SupCon with an explicit balance. Per anchor i with at least one positive::

        loss_i = -(1/|P(i)|) sum_{p in P(i)} l_ip + balance * log sum_{j in P(i) u N(i)} exp(l_ij)

    with l = s / temperature. One sub-loss ``loss`` per anchor (``element``). The
    default reducer averages the non-zero anchors (PML's ``AvgNonZeroReducer`` keeps
    only losses > 0, which would drop the negative losses ``balance < 1`` allows; on
    ``balance=1`` the two agree), so at ``balance=1`` it equals PML's ``SupConLoss``
    with any reducer, distance or miner. Pass PML's ``AvgNonZeroReducer`` explicitly
    only with ``balance >= 1``. Anchors without a positive contribute 0; a
    batch without any positive or any negative pair gives PML's zero loss.

    Args:
        temperature: > 0 (default 0.1).
        balance: weight of the entropy (log-denominator) term, >= 0.
        chunk_size: anchor rows per checkpointed block (None: one block).

    Examples:
        >>> import torch, pmlbal
        >>> loss = pmlbal.losses.BalancedSupConLoss(balance=2.0)(torch.randn(8, 4), torch.arange(8) % 2)
    """

    needs_pos_and_neg = True

    def __init__(self, temperature: float = 0.1, balance: float = 1.0, chunk_size: int | None = None, **kwargs):
        self.temperature = check_positive("temperature", temperature)
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_reducer(self):
        return NonZeroMeanReducer()

    def get_default_distance(self):
        return CosineSimilarity()

    def _compute_loss(self, batch: Batch) -> Output:
        def block(b: Block):
            logits = self.logits(b.mat, self.temperature)
            # SupCon's masks are sets: a pair mined twice still counts once (as in PML).
            pos, neg = (as_mask(m) for m in b.masks())
            pos_mean, has_pos = masked_mean(logits, pos)
            lse, _ = masked_logsumexp(logits, pos | neg)
            return -pos_mean, lse, has_pos

        pos_term, ent_term, has_pos = self.map_blocks(block, batch)
        losses = torch.where(has_pos, pos_term + self.balance * ent_term, torch.zeros_like(pos_term))
        indices = c_f.torch_arange_from_size(batch.embeddings)
        return Output(
            {"loss": {"losses": losses, "indices": indices, "reduction_type": "element"}},
            detached_mean(pos_term, has_pos),
            detached_mean(ent_term, has_pos),
        )

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        return self.balance * (batch_size - samples_per_class) / (batch_size - 1)
