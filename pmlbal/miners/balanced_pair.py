"""BalancedPairMiner: every positive pair, and a fixed number of negatives per positive."""

from __future__ import annotations

import torch
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..losses._core import distance_matrix
from ..losses.base import check_choice
from ..registry import register


@register("miner")
class BalancedPairMiner(BaseMiner):
    """Keep all positive pairs (ordered, as PML counts them) and `neg_per_pos` negatives for each.

    For each positive pair (a, p) it returns `neg_per_pos` negative pairs (a, n) with the
    same anchor, so #negative pairs = neg_per_pos x #positive pairs whatever the batch
    size, and the positive/negative ratio a loss sees (its balance) stays fixed.
    Negatives are distinct while the anchor has enough; otherwise they are drawn again
    (cycled in the same order). Anchors without any negative keep no pairs.

    strategy: ``"hard"`` (the anchor's closest negatives), ``"semihard"`` (the closest
    negatives farther than the positive, then the hardest of the rest) or ``"random"``.

    Returns PML's pair tuple ``(a1, p, a2, n)``; works with any PML distance.
    """

    def __init__(self, neg_per_pos: int = 4, strategy: str = "hard", **kwargs) -> None:
        if not isinstance(neg_per_pos, int) or isinstance(neg_per_pos, bool) or neg_per_pos < 1:
            raise ValueError(f"neg_per_pos must be a positive integer, got {neg_per_pos!r}")
        self.neg_per_pos = neg_per_pos
        self.strategy = check_choice("strategy", strategy, ("hard", "semihard", "random"))
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["neg_per_pos"], is_stat=False)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        a1, p, _, _ = lmu.get_all_pairs_indices(labels, ref_labels)
        empty = torch.empty(0, dtype=torch.long, device=labels.device)
        if len(a1) == 0:
            return a1, p, empty, empty
        with torch.no_grad():
            mat = distance_matrix(self.distance, embeddings, ref_emb)
            closeness = mat if self.distance.is_inverted else -mat
            neg = labels[:, None] != ref_labels[None, :]
            rows_neg = neg[a1]  # one row of candidates per positive pair
            if self.strategy == "hard":
                key = closeness[a1]
            elif self.strategy == "random":
                key = torch.rand(rows_neg.shape, device=mat.device)
            else:
                c = closeness[a1]
                farther = c < closeness[a1, p][:, None]
                # Semi-hard first (the closest of them first), then the hardest of the rest.
                key = torch.where(farther, c + 4.0 * c.abs().max() + 1.0, c)
            key = key.masked_fill(~rows_neg, float("-inf"))
            k = min(self.neg_per_pos, key.shape[1])
            order = torch.topk(key, k, dim=1).indices
            count = rows_neg.sum(dim=1)
            cols = torch.arange(self.neg_per_pos, device=mat.device)[None, :] % count.clamp(min=1)[:, None]
            cols = cols.clamp(max=k - 1)
            chosen = torch.gather(order, 1, cols)
        keep = count > 0
        a2 = a1[keep].repeat_interleave(self.neg_per_pos)
        n = chosen[keep].reshape(-1)
        return a1, p, a2, n
