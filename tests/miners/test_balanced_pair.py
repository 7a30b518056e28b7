import pytest
import torch
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

import pmlbal
from pmlbal.miners import BalancedPairMiner
from tests.helpers import clustered


@pytest.mark.parametrize("strategy", ["hard", "semihard", "random"])
@pytest.mark.parametrize("k", [1, 3, 50])
def test_exact_ratio_same_anchor_true_negatives(strategy, k):
    emb, labels = clustered(6, 4, 8)
    a1, p, a2, n = BalancedPairMiner(neg_per_pos=k, strategy=strategy)(emb.detach(), labels)
    assert len(a1) == 6 * 4 * 3  # all ordered positive pairs
    assert len(a2) == k * len(a1)
    assert torch.equal(a2, a1.repeat_interleave(k))
    assert (labels[a2] != labels[n]).all()
    per_pair = n.view(len(a1), k)
    if k <= 20:  # enough negatives (20 per anchor): all distinct
        assert all(len(set(row.tolist())) == k for row in per_pair)
    else:  # drawn again: every negative of the anchor appears
        assert all(len(set(row.tolist())) == 20 for row in per_pair)


def test_hard_picks_the_closest_negatives():
    emb, labels = clustered(5, 3, 6)
    e = emb.detach()
    a1, p, a2, n = BalancedPairMiner(neg_per_pos=2, strategy="hard", distance=LpDistance())(e, labels)
    d = torch.cdist(torch.nn.functional.normalize(e, dim=1), torch.nn.functional.normalize(e, dim=1))
    for i in range(0, len(a1)):
        a = int(a1[i])
        negs = [j for j in range(len(labels)) if labels[j] != labels[a]]
        best = sorted(negs, key=lambda j: float(d[a, j]))[:2]
        assert sorted(n[2 * i : 2 * i + 2].tolist()) == sorted(best)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_lp_distance_mines_as_fp32(dtype):
    # cdist has no bf16 CPU kernel for small batches; the miner takes the distances in fp32.
    emb, labels = clustered(5, 3, 6)
    low = emb.detach().to(dtype)
    a1, p, a2, n = BalancedPairMiner(neg_per_pos=2, strategy="hard", distance=LpDistance())(low, labels)
    # Reference: every ordered positive pair and the two closest negatives, by a loop over fp32 copies.
    e = torch.nn.functional.normalize(low.float(), dim=1)
    pairs = [(a, q) for a in range(len(labels)) for q in range(len(labels)) if q != a and labels[q] == labels[a]]
    assert sorted(zip(a1.tolist(), p.tolist())) == pairs
    assert torch.equal(a2, a1.repeat_interleave(2))
    for i in range(len(a1)):
        a = int(a1[i])
        negs = [j for j in range(len(labels)) if labels[j] != labels[a]]
        best = sorted(negs, key=lambda j: float(((e[a] - e[j]) ** 2).sum()))[:2]
        assert sorted(n[2 * i : 2 * i + 2].tolist()) == sorted(best)


def test_semihard_prefers_negatives_farther_than_the_positive():
    emb, labels = clustered(5, 3, 6, spread=1.5)
    e = emb.detach()
    a1, p, _, n = BalancedPairMiner(neg_per_pos=1, strategy="semihard", distance=CosineSimilarity())(e, labels)
    s = torch.nn.functional.normalize(e, dim=1) @ torch.nn.functional.normalize(e, dim=1).T
    for i in range(len(a1)):
        a, pp = int(a1[i]), int(p[i])
        negs = [j for j in range(len(labels)) if labels[j] != labels[a]]
        semi = [j for j in negs if s[a, j] < s[a, pp]]
        expected = max(semi, key=lambda j: float(s[a, j])) if semi else max(negs, key=lambda j: float(s[a, j]))
        assert int(n[i]) == expected


def test_registered_and_feeds_every_loss():
    assert pml_miners.BalancedPairMiner is BalancedPairMiner and "BalancedPairMiner" in pmlbal.list_miners()
    emb, labels = clustered(4, 4, 8)
    miner = pmlbal.create("BalancedPairMiner", neg_per_pos=3)
    for name in pmlbal.list_losses():
        loss = pmlbal.create(name)(emb, labels, miner(emb.detach(), labels))
        assert torch.isfinite(loss) and loss.requires_grad


def test_single_class_and_bad_arguments():
    a1, p, a2, n = BalancedPairMiner()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    assert len(a1) == 12 and len(a2) == 0
    with pytest.raises(ValueError, match="neg_per_pos"):
        BalancedPairMiner(neg_per_pos=0)
    with pytest.raises(ValueError, match="strategy"):
        BalancedPairMiner(strategy="easy")
