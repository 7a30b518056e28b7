"""The body DHEL and KCL share (Koromilas et al., ICML 2024): alignment plus per-view uniformity."""

from __future__ import annotations

import torch
from pytorch_metric_learning.utils import common_functions as c_f

from ._core import Block, Pairs, detached_mean, masked_mean
from .base import BalancedLoss, Batch, Output, Refs


class TwoViewLoss(BalancedLoss):
    """Alignment over positive pairs plus a uniformity term over negatives, in two forms.

    Two-view form (``ref_emb`` given, pairs from labels, e.g.
    ``loss(z, labels, ref_emb=z_plus, ref_labels=labels)``): alignment of z_i with its
    positives in ``ref_emb``; uniformity of each view on its own, over that view's rows
    j != i with another label. The second view's term is the sub-loss
    ``positive_view_loss`` (one per reference row) when ``include_positive_view``.
    Supervised form (no ``ref_emb``, or a miner's ``indices_tuple``): alignment over P(i),
    uniformity over N(i), both from the anchors-by-references matrix. Per anchor::

        loss_i = masked_mean_{P(i)} alignment(x) + balance * uniformity(x, N(i))

    Subclasses write the block math: ``values(mat)`` (the per-pair quantity, e.g. logits),
    ``alignment(x)`` (per-pair, averaged over each anchor's positives) and
    ``uniformity(x, neg)`` (per row, over the entries of ``neg``).
    """

    include_positive_view = True

    def _sub_loss_names(self):
        return ["loss", "positive_view_loss"]

    def values(self, mat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alignment(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def uniformity(self, x: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _compute_loss(self, batch: Batch) -> Output:
        two_view = batch.refs is Refs.SEPARATE and batch.pairs.from_labels

        def block(b: Block):
            x = self.values(b.mat)
            pos, neg = b.masks()
            align, _ = masked_mean(self.alignment(x), pos)
            return (align,) if two_view else (align, self.uniformity(x, neg))

        align, *rest = self.map_blocks(block, batch)
        plus = None
        if two_view:
            uniform = self._view_uniformity(batch.embeddings, batch.labels)
            if self.include_positive_view:
                plus = self._view_uniformity(batch.ref_emb, batch.ref_labels)
        else:
            uniform = rest[0]
        losses = {
            "loss": {
                "losses": align + self.balance * uniform,
                "indices": c_f.torch_arange_from_size(batch.embeddings),
                "reduction_type": "element",
            },
            "positive_view_loss": self.zero_loss() if plus is None else {
                "losses": self.balance * plus,
                "indices": c_f.torch_arange_from_size(batch.ref_emb),
                "reduction_type": "element",
            },
        }
        entropy = detached_mean(uniform) if plus is None else detached_mean(uniform) + detached_mean(plus)
        return Output(losses, detached_mean(align), entropy)

    def _view_uniformity(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per row i of one view: uniformity over the rows j != i of that view with another label."""
        pairs = Pairs(len(x), len(x), x.device, labels=labels, ref_labels=labels, exclude_self=True)
        view = Batch(x, labels, x, labels, Refs.BATCH, pairs)
        return self.map_blocks(lambda b: (self.uniformity(self.values(b.mat), b.masks()[1]),), view)[0]
