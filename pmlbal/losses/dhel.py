"""DHEL: decoupled hyperspherical energy loss (Koromilas et al., ICML 2024, arXiv 2405.18045)."""

from __future__ import annotations

from pytorch_metric_learning.distances import CosineSimilarity

from ..registry import register
from ._core import masked_logsumexp
from .base import check_positive
from .two_view import TwoViewLoss


@register("loss", tune={"balance": ("log", 1 / 16, 16), "temperature": ("log", 1 / 64, 1.0)})
class DHELLoss(TwoViewLoss):
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

    def values(self, mat):
        return self.logits(mat, self.temperature)

    def alignment(self, logits):
        return -logits

    def uniformity(self, logits, neg):
        return masked_logsumexp(logits, neg)[0]

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        """Of the two-view form, for which DHEL is defined: each view's log-sum-exp puts as much
        weight on its negatives as the alignment puts on the positive. The supervised form has
        one uniformity term, so its ratio is ``balance``."""
        return self.balance * (2.0 if self.include_positive_view else 1.0)
