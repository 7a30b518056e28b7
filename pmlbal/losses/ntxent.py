"""Balanced NT-Xent / InfoNCE (Sors et al., arXiv 2112.11743)."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity

from ..registry import register
from ._core import Block, detached_mean, masked_logsumexp
from .base import Batch, Output, PMLCompatibleLoss, check_choice, check_positive


@register("loss", tune={"balance": ("log", 1 / 16, 16), "temperature": ("log", 1 / 64, 1.0)})
class BalancedNTXentLoss(PMLCompatibleLoss):
    """NT-Xent with an explicit balance between its positive and entropy terms.

    Per positive pair (i, p), with logits l = s / temperature::

        pos_term = -l_ip
        ent_term = log( [exp(l_ip) unless decoupled] + w_i * sum_{n in N(i)} exp(l_in) )
        loss     = pos_term + balance * ent_term

    ``w_i = 1`` for ``negatives="sum"`` (classic InfoNCE) and ``1/|N(i)|`` for
    ``negatives="mean"`` (pmlbal design: the balance no longer drifts with batch size).
    One sub-loss ``loss`` per positive pair (reduction type ``pos_pair``), exactly as
    PML's ``NTXentLoss``: with ``balance=1, negatives="sum", decoupled=False`` any PML
    reducer, distance or miner gives PML's value. A pair whose anchor has no negative
    contributes 0 (PML does the same: its two terms cancel).

    Args:
        temperature: softmax temperature, > 0 (default 0.07).
        balance: weight of the entropy term, >= 0 (default 1).
        negatives: ``"sum"`` or ``"mean"``.
        decoupled: drop the positive from the denominator (DCL).
        chunk_size: anchor rows per checkpointed block (None: one block).

    Raises:
        ValueError: on a non-positive temperature, negative balance or unknown ``negatives``.

    Examples:
        >>> import torch, pmlbal
        >>> loss_fn = pmlbal.losses.BalancedNTXentLoss(temperature=0.1, balance=0.5)
        >>> emb, labels = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss = loss_fn(emb, labels)
    """

    needs_pos_and_neg = True

    def __init__(
        self,
        temperature: float = 0.07,
        balance: float = 1.0,
        negatives: str = "sum",
        decoupled: bool = False,
        chunk_size: int | None = None,
        **kwargs,
    ) -> None:
        self.temperature = check_positive("temperature", temperature)
        self.negatives = check_choice("negatives", negatives, ("sum", "mean"))
        self.decoupled = bool(decoupled)
        super().__init__(balance=balance, chunk_size=chunk_size, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def _compute_loss(self, batch: Batch) -> Output:
        def block(b: Block):
            logits = self.logits(b.mat, self.temperature)
            _, neg = b.masks()
            neg_lse, has_neg = masked_logsumexp(logits, neg)
            if self.negatives == "mean":
                neg_lse = neg_lse - torch.log(neg.sum(dim=1).clamp(min=1).to(neg_lse.dtype))
            rows, cols = b.pos_index()
            return logits[rows, cols], neg_lse[rows], has_neg[rows]

        pos_logit, neg_lse, valid = self.map_blocks(block, batch)
        pos_term = -pos_logit
        ent_term = neg_lse if self.decoupled else torch.logaddexp(pos_logit, neg_lse)
        ent_term = torch.where(valid, ent_term, 0.0)
        losses = torch.where(valid, pos_term + self.balance * ent_term, 0.0)
        return Output(
            {"loss": {"losses": losses, "indices": batch.pairs.pos_pairs(), "reduction_type": "pos_pair"}},
            detached_mean(pos_term, valid),
            detached_mean(ent_term, valid),
        )

    def effective_balance(self, batch_size: int, samples_per_class: int) -> float:
        if self.decoupled:
            return self.balance
        # At equal similarities the softmax leaves 1/(1 + w*n) of the entropy term's
        # weight on the positive itself and w*n/(1 + w*n) on the negatives.
        wn = 1.0 if self.negatives == "mean" else float(batch_size - samples_per_class)
        return self.balance * wn / (1.0 + wn)
