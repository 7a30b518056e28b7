"""KCL: kernel contrastive loss (Koromilas et al., ICML 2024, arXiv 2405.18045)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils import common_functions as c_f

from ..registry import register
from ._core import compute_dtype, detached_mean, map_row_blocks, masked_mean
from .base import BalancedLoss, check_choice, check_positive


@register("loss", tune={"balance": ("log", 1.0, 256.0), "t": ("log", 0.25, 16.0)})
class KCLLoss(BalancedLoss):
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

    def _sub_loss_names(self):
        return ["loss", "positive_view_loss"]

    def _sq_dist(self, q, refs):
        s = self.pair_matrix(q, refs)
        return (2.0 - 2.0 * s.to(compute_dtype(s.dtype))).clamp(min=0.0)

    def _align_kernel(self, d2):
        return torch.exp(-self.t * d2) if self.kernel == "gaussian" else -torch.log1p(self.t * d2)

    def _energy_kernel(self, d2):
        return torch.exp(-self.t * d2) if self.kernel == "gaussian" else -0.5 * torch.log1p(self.t * d2)

    def _energy(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.same_view_reduce(
            x, labels, lambda q, refs: self._energy_kernel(self._sq_dist(q, refs)), masked_mean
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        pairs = self.make_pairs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        two_view = ref_emb is not embeddings and indices_tuple is None

        def block(q, refs, r0, r1):
            d2 = self._sq_dist(q, refs)
            pos, neg = pairs.block(r0, r1, d2.dtype)
            align = -2.0 * masked_mean(self._align_kernel(d2), pos)[0]
            if two_view:
                return (align,)
            return align, masked_mean(self._energy_kernel(d2), neg)[0]

        out = map_row_blocks(block, embeddings, ref_emb, self.chunk_size)
        align = out[0]
        energy = self._energy(embeddings, labels) if two_view else out[1]
        view_loss = None
        entropy = detached_mean(energy)
        if two_view:
            energy_plus = self._energy(ref_emb, ref_labels)
            entropy = entropy + detached_mean(energy_plus)
            view_loss = {
                "losses": self.balance * energy_plus,
                "indices": c_f.torch_arange_from_size(ref_emb),
                "reduction_type": "element",
            }
        self.record_terms(detached_mean(align), entropy)
        return {
            "loss": {
                "losses": align + self.balance * energy,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            },
            "positive_view_loss": view_loss if view_loss is not None else self.zero_loss(),
        }

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        # Alignment carries weight 2 per anchor; the energy kernel's slope is half the
        # alignment kernel's for "log" and equal for "gaussian".
        return self.balance * (1.0 if self.kernel == "gaussian" else 0.5)
