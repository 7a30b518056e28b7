"""Reducers that the balanced losses need beyond PML's."""

from __future__ import annotations

import torch
from pytorch_metric_learning.reducers import BaseReducer


class NonZeroMeanReducer(BaseReducer):
    """Mean over the losses that are not exactly zero (zero means "no positive here").

    PML's ``AvgNonZeroReducer`` keeps losses ``> 0``. At ``balance < 1`` a SupCon
    anchor's loss can be legitimately negative, and ``> 0`` would silently drop it;
    this reducer keeps it. On non-negative losses (``balance=1``) both are identical.
    """

    def _reduce(self, losses, embeddings):
        kept = losses[losses != 0]
        if len(kept) == 0:
            return self.zero_loss(embeddings)
        return torch.mean(kept)

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self._reduce(losses, embeddings)

    pos_pair_reduction = neg_pair_reduction = triplet_reduction = element_reduction
