"""alpha-CL: contrastive learning as coordinate-wise optimisation (Tian, NeurIPS 2022, arXiv 2201.12680)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity

from ..registry import register
from ._core import Block, detached_mean
from .base import BalancedLoss, Batch, Output, check_choice, check_nonnegative, check_positive


@register("loss", tune={"balance": ("log", 1 / 16, 16), "temperature": ("log", 1 / 64, 2.0)})
class AlphaCLLoss(BalancedLoss):
    """alpha-CL: the network maximises, a pairwise-importance player alpha (no gradient) minimises.

    For each positive pair (i, p), with r_ij = 1 - s_ij over negatives j in N(i)::

        w_ij     = g(r_ij ** exponent)                      (on detached r)
        alpha_ij = w_ij / (sum_k w_ik + eps * |N(i)|)
        loss_ip  = balance * sum_j alpha_ij s_ij - (sum_j alpha_ij) s_ip

    g: ``"exp"`` exp(-x / temperature); ``"inverse"`` (x + temperature) ** -inverse_power;
    ``"quadratic"`` [mu_i - x]_+ / temperature with mu_i such that the weights sum to 1
    (projection onto the simplex). With ``weighting="exp", exponent=1, eps=0, balance=1``
    the gradient is temperature x the gradient of ``BalancedNTXentLoss(decoupled=True)``.
    The value can be negative and is not comparable with InfoNCE. ``balance`` (pmlbal
    design) scales the negative term; 1 is the paper's loss. One sub-loss ``loss`` per
    positive pair (``pos_pair``), mean-reduced.

    Args:
        weighting: ``"exp"``, ``"inverse"`` or ``"quadratic"``.
        temperature: > 0 (default 0.5). exponent: > 0 (default 1). eps: >= 0 (default 0.1).
        inverse_power: > 0 (default 1). balance: >= 0. chunk_size: rows per block.
    """

    needs_pos_and_neg = True

    def __init__(
        self,
        weighting: str = "exp",
        temperature: float = 0.5,
        exponent: float = 1.0,
        eps: float = 0.1,
        inverse_power: float = 1.0,
        balance: float = 1.0,
        chunk_size: int | None = None,
        **kwargs,
    ):
        self.weighting = check_choice("weighting", weighting, ("exp", "inverse", "quadratic"))
        self.temperature = check_positive("temperature", temperature)
        self.exponent = check_positive("exponent", exponent)
        self.eps = check_nonnegative("eps", eps)
        self.inverse_power = check_positive("inverse_power", inverse_power)
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        if type(self.distance) is not CosineSimilarity or not self.distance.normalize_embeddings:
            raise ValueError("AlphaCLLoss needs distance=CosineSimilarity() on normalised embeddings")
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def pair_weights(self, x: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Unnormalised importance w_ij = g(x_ij) on negatives (counts weight duplicates)."""
        if self.weighting == "exp":
            if self.eps == 0:
                # Without eps the row-wise shift cancels in the normalisation, and it keeps
                # small temperatures from underflowing every weight to 0.
                x = x - x.masked_fill(neg <= 0, float("inf")).amin(dim=1, keepdim=True).clamp(max=2.0**self.exponent)
            return neg * torch.exp(-x / self.temperature)
        if self.weighting == "inverse":
            return neg * (x + self.temperature) ** (-self.inverse_power)
        return neg * _simplex_weights(x, neg, self.temperature)

    def _compute_loss(self, batch: Batch) -> Output:
        def block(b: Block):
            s = b.mat
            neg = b.masks()[1].to(s.dtype)
            with torch.no_grad():
                x = (1.0 - s).clamp(min=0.0) ** self.exponent
                w = self.pair_weights(x, neg)
                alpha = w / (w.sum(dim=1, keepdim=True) + self.eps * neg.sum(dim=1, keepdim=True)).clamp(
                    min=torch.finfo(s.dtype).tiny
                )
            rows, cols = b.pos_index()
            return s[rows, cols], (alpha * s).sum(dim=1)[rows], alpha.sum(dim=1)[rows]

        s_pos, neg_sum, alpha_mass = self.map_blocks(block, batch)
        pos_term = -alpha_mass * s_pos
        losses = pos_term + self.balance * neg_sum
        return Output(
            {"loss": {"losses": losses, "indices": batch.pairs.pos_pairs(), "reduction_type": "pos_pair"}},
            detached_mean(pos_term),
            detached_mean(neg_sum),
        )

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        return self.balance


def _simplex_weights(x: torch.Tensor, count: torch.Tensor, tau: float) -> torch.Tensor:
    """[mu_i - x_ij]_+ / tau with mu_i solving sum_j count_ij [mu_i - x_ij]_+ = tau, row-wise."""
    big = torch.finfo(x.dtype).max
    xs = x.masked_fill(count <= 0, big)
    order = torch.argsort(xs, dim=1)
    x_sorted = torch.gather(xs, 1, order)
    c_sorted = torch.gather(count, 1, order)
    c_cum = c_sorted.cumsum(dim=1)
    cx_cum = (c_sorted * x_sorted.masked_fill(c_sorted <= 0, 0.0)).cumsum(dim=1)
    mu_k = (tau + cx_cum) / c_cum.clamp(min=1e-12)
    valid = (mu_k > x_sorted) & (c_sorted > 0)
    # The support is a prefix of the sorted row: take the last k where mu_k > x_(k).
    k = (valid.cumsum(dim=1) * valid).argmax(dim=1, keepdim=True)
    mu = torch.gather(mu_k, 1, k)
    return torch.relu(mu - x) / tau
