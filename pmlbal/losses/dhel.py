"""DHEL: decoupled hyperspherical energy loss (Koromilas et al., ICML 2024, arXiv 2405.18045)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils import common_functions as c_f

from ..registry import register
from ._core import detached_mean, map_row_blocks, masked_logsumexp, masked_mean
from .base import BalancedLoss, check_positive


@register("loss", tune={"balance": ("log", 1 / 16, 16), "temperature": ("log", 1 / 64, 1.0)})
class DHELLoss(BalancedLoss):
    """DHEL: alignment, plus uniformity over same-view samples only.

    Two-view form, ``loss(z, labels, ref_emb=z_plus, ref_labels=labels)`` (no miner)::

        L = mean_i [ -l(z_i, z_i+) + balance * ( log sum_{j in N(i)} exp l(z_i, z_j)
                                               + [include_positive_view] log sum_{j in N(i)} exp l(z_i+, z_j+) ) ]

    with l = s / temperature and N(i) the other samples of the same view (other labels).
    Supervised form (no ``ref_emb``, or a miner's ``indices_tuple``): alignment is the
    mean of ``-l_ip`` over P(i), uniformity ``log sum_{j in N(i)} exp(l_ij)``; positives
    never enter the denominator. Sub-losses: ``loss`` per anchor and
    ``positive_view_loss`` per reference row (both ``element``, mean-reduced).

    Args:
        temperature: > 0 (default 0.3, the authors' choice).
        balance: weight of the uniformity terms, >= 0.
        include_positive_view: add the second view's uniformity (authors' default True).
        chunk_size: anchor rows per checkpointed block (None: one block).

    Examples:
        >>> import torch, pmlbal
        >>> from pytorch_metric_learning.losses import SelfSupervisedLoss
        >>> loss = SelfSupervisedLoss(pmlbal.losses.DHELLoss())(torch.randn(8, 4), torch.randn(8, 4))
    """

    def __init__(
        self,
        temperature: float = 0.3,
        balance: float = 1.0,
        include_positive_view: bool = True,
        chunk_size: int | None = None,
        **kwargs,
    ):
        self.temperature = check_positive("temperature", temperature)
        self.include_positive_view = bool(include_positive_view)
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def _sub_loss_names(self):
        return ["loss", "positive_view_loss"]

    def _uniformity(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.same_view_reduce(
            x, labels, lambda q, refs: self.logits(self.pair_matrix(q, refs), self.temperature), masked_logsumexp
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        pairs = self.make_pairs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        two_view = ref_emb is not embeddings and indices_tuple is None

        def block(q, refs, r0, r1):
            logits = self.logits(self.pair_matrix(q, refs), self.temperature)
            pos, neg = pairs.block(r0, r1, logits.dtype)
            align, _ = masked_mean(-logits, pos)
            if two_view:
                return (align,)
            return align, masked_logsumexp(logits, neg)[0]

        out = map_row_blocks(block, embeddings, ref_emb, self.chunk_size)
        align = out[0]
        uniform = self._uniformity(embeddings, labels) if two_view else out[1]
        view_loss = None
        if two_view and self.include_positive_view:
            uniform_plus = self._uniformity(ref_emb, ref_labels)
            view_loss = {
                "losses": self.balance * uniform_plus,
                "indices": c_f.torch_arange_from_size(ref_emb),
                "reduction_type": "element",
            }
            entropy = detached_mean(uniform) + detached_mean(uniform_plus)
        else:
            entropy = detached_mean(uniform)
        self.record_terms(detached_mean(align), entropy)
        return {
            "loss": {
                "losses": align + self.balance * uniform,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            },
            "positive_view_loss": view_loss if view_loss is not None else self.zero_loss(),
        }

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        return self.balance * (2.0 if self.include_positive_view else 1.0)
