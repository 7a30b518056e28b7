"""KCL: kernel contrastive loss (Koromilas et al., ICML 2024, arXiv 2405.18045)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity

from ..registry import register
from ._core import masked_mean
from .base import check_choice, check_positive
from .two_view import TwoViewLoss


@register("loss", tune={"balance": ("log", 1.0, 256.0), "t": ("log", 0.25, 16.0)})
class KCLLoss(TwoViewLoss):
    """Kernel contrastive loss: alignment kernel on positives, energy kernel on negatives.

    Two-view form, ``loss(z, labels, ref_emb=z_plus, ref_labels=labels)`` (no miner)::

        L = -2 mean_i K(z_i, z_i+) + balance * [ mean_{i<j} K(z_i, z_j) + mean_{i<j} K(z_i+, z_j+) ]
        gaussian: K(x, y) = exp(-t |x - y|^2)
        log:      alignment K = -log(t |x - y|^2 + 1), energy K = -1/2 log(t |x - y|^2 + 1)

    ``balance`` is the paper's gamma. |x - y|^2 is computed as ``2 - 2 x.y`` on normalised
    vectors (clamped at 0), never with ``pdist``, whose gradient is undefined at 0.
    Supervised form (no ``ref_emb``, or a miner's ``indices_tuple``): alignment over
    positive pairs, energy over negative pairs. Sub-losses as ``DHELLoss``.

    Args:
        kernel: ``"gaussian"`` or ``"log"``.
        t: kernel scale, > 0 (default 2).
        balance: gamma, >= 0 (default 16).
        chunk_size: anchor rows per checkpointed block (None: one block).

    Raises:
        ValueError: for an unknown kernel, t <= 0, or a distance other than CosineSimilarity.
    """

    def __init__(
        self,
        kernel: str = "gaussian",
        t: float = 2.0,
        balance: float = 16.0,
        chunk_size: int | None = None,
        **kwargs,
    ):
        self.kernel = check_choice("kernel", kernel, ("gaussian", "log"))
        self.t = check_positive("t", t)
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        if type(self.distance) is not CosineSimilarity or not self.distance.normalize_embeddings:
            raise ValueError("KCLLoss needs distance=CosineSimilarity() on normalised embeddings")
        self.add_to_recordable_attributes(list_of_names=["t"], is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def values(self, mat):
        return (2.0 - 2.0 * mat).clamp(min=0.0)  # squared distance of normalised vectors

    def alignment(self, d2):
        return -2.0 * (torch.exp(-self.t * d2) if self.kernel == "gaussian" else -torch.log1p(self.t * d2))

    def uniformity(self, d2, neg):
        energy = torch.exp(-self.t * d2) if self.kernel == "gaussian" else -0.5 * torch.log1p(self.t * d2)
        return masked_mean(energy, neg)[0]

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        """Of the two-view form, for which gamma is defined: alignment carries weight 2 per anchor,
        the energy one per view, and the energy kernel's slope is the alignment kernel's
        ("gaussian") or half of it ("log"). The supervised form has one energy term: half this."""
        return self.balance * (1.0 if self.kernel == "gaussian" else 0.5)
