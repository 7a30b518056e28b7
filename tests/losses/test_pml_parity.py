"""At balance 1 the balanced losses must equal PML's own losses, value and gradient."""

import copy

import pytest
import torch
from pytorch_metric_learning import distances, losses as pml_losses, miners, reducers

from pmlbal.losses import BalancedContrastiveLoss, BalancedNTXentLoss, BalancedSupConLoss

from tests.helpers import clustered

PAIRS = {
    "ntxent": (lambda **kw: BalancedNTXentLoss(temperature=0.2, **kw), lambda **kw: pml_losses.NTXentLoss(temperature=0.2, **kw)),
    "supcon": (lambda **kw: BalancedSupConLoss(temperature=0.15, **kw), lambda **kw: pml_losses.SupConLoss(temperature=0.15, **kw)),
    "contrastive": (
        lambda **kw: BalancedContrastiveLoss(pos_margin=0.2, neg_margin=0.9, **kw),
        lambda **kw: pml_losses.ContrastiveLoss(pos_margin=0.2, neg_margin=0.9, **kw),
    ),
}

DISTANCES = {
    "default": None,
    "cosine": distances.CosineSimilarity(),
    "lp": distances.LpDistance(),
    "lp_unnormalised_sq": distances.LpDistance(normalize_embeddings=False, power=2),
    "dot": distances.DotProductSimilarity(),
}

REDUCERS = {
    "default": None,
    "mean": reducers.MeanReducer(),
    "avgnonzero": reducers.AvgNonZeroReducer(),
    "per_anchor": reducers.PerAnchorReducer(),
    "threshold": reducers.ThresholdReducer(low=0.1),
    "sum": reducers.SumReducer(),
}


def _close_grad(ours, theirs, rtol):
    # Relative to the gradient's scale: float32 rounding differs per element where terms cancel.
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()) + 1e-12)


def _compare(make_ours, make_theirs, emb, labels, indices_tuple=None, ref_emb=None, ref_labels=None, rtol=1e-5, **kw):
    ours, theirs = make_ours(**copy.deepcopy(kw)), make_theirs(**copy.deepcopy(kw))
    e1 = emb.detach().clone().requires_grad_(True)
    e2 = emb.detach().clone().requires_grad_(True)
    r1 = r2 = None
    if ref_emb is not None:
        r1 = ref_emb.detach().clone().requires_grad_(True)
        r2 = ref_emb.detach().clone().requires_grad_(True)
    a = ours(e1, labels, indices_tuple, r1, ref_labels)
    b = theirs(e2, labels, indices_tuple, r2, ref_labels)
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-7)
    if b.requires_grad:
        a.backward()
        b.backward()
        _close_grad(e1.grad, e2.grad, rtol)
        if r1 is not None:
            _close_grad(r1.grad, r2.grad, rtol)
    return a, b


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dist", DISTANCES)
def test_parity_over_distances(name, dtype, dist):
    if name == "ntxent" and dist == "lp_unnormalised_sq":
        pytest.skip("unnormalised squared distances overflow exp() in PML's NT-Xent too")
    emb, labels = clustered(6, 4, 8, dtype=dtype)
    kw = {} if DISTANCES[dist] is None else {"distance": DISTANCES[dist]}
    _compare(*PAIRS[name], emb, labels, **kw)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("red", REDUCERS)
def test_parity_over_reducers(name, red):
    emb, labels = clustered(5, 4, 8)
    kw = {} if REDUCERS[red] is None else {"reducer": REDUCERS[red]}
    _compare(*PAIRS[name], emb, labels, **kw)


def test_parity_with_multiple_reducers_on_contrastive():
    emb, labels = clustered(5, 4, 8)
    red = reducers.MultipleReducers({"pos_loss": reducers.MeanReducer(), "neg_loss": reducers.AvgNonZeroReducer()})
    _compare(*PAIRS["contrastive"], emb, labels, reducer=red)


MINERS = {
    "multisimilarity_pairs": lambda: miners.MultiSimilarityMiner(epsilon=0.3),
    "triplet_margin_triplets": lambda: miners.TripletMarginMiner(margin=0.4, type_of_triplets="all"),
    "pair_margin": lambda: miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
    "batch_hard_triplets": lambda: miners.BatchHardMiner(),
}


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_with_miners(name, miner, dtype):
    emb, labels = clustered(6, 4, 8, dtype=dtype)
    indices_tuple = MINERS[miner]()(emb.detach(), labels)
    _compare(*PAIRS[name], emb, labels, indices_tuple=indices_tuple)


@pytest.mark.parametrize("name", PAIRS)
def test_parity_with_ref_emb(name):
    emb, labels = clustered(5, 4, 8)
    ref, ref_labels = clustered(5, 3, 8, seed=1)
    _compare(*PAIRS[name], emb, labels, ref_emb=ref, ref_labels=ref_labels)


@pytest.mark.parametrize("name", PAIRS)
def test_parity_inside_cross_batch_memory(name):
    make_ours, make_theirs = PAIRS[name]
    ours = pml_losses.CrossBatchMemory(make_ours(), embedding_size=8, memory_size=40)
    theirs = pml_losses.CrossBatchMemory(make_theirs(), embedding_size=8, memory_size=40)
    for step in range(4):
        emb, labels = clustered(4, 4, 8, seed=step)
        a = ours(emb, labels)
        b = theirs(emb.detach().clone().requires_grad_(True), labels)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", PAIRS)
def test_parity_inside_self_supervised_loss(name):
    make_ours, make_theirs = PAIRS[name]
    za, zb = torch.randn(12, 8, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64)
    for symmetric in (True, False):
        a = pml_losses.SelfSupervisedLoss(make_ours(), symmetric=symmetric)(za, zb)
        b = pml_losses.SelfSupervisedLoss(make_theirs(), symmetric=symmetric)(za, zb)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", PAIRS)
def test_parity_with_embedding_regularizer(name):
    from pytorch_metric_learning.regularizers import LpRegularizer

    emb, labels = clustered(4, 4, 8)
    _compare(*PAIRS[name], emb, labels, embedding_regularizer=LpRegularizer())


@pytest.mark.parametrize("name", PAIRS)
def test_parity_on_degenerate_batches(name):
    make_ours, make_theirs = PAIRS[name]
    cases = [
        (torch.randn(6, 4), torch.zeros(6, dtype=torch.long)),  # one class: no negatives
        (torch.randn(6, 4), torch.arange(6)),  # all singletons: no positives
        (torch.randn(2, 4), torch.tensor([0, 0])),  # batch of 2
        (torch.randn(2, 4), torch.tensor([0, 1])),
        (torch.randn(5, 4), torch.tensor([0, 0, 1, 2, 3])),  # most anchors lack a positive
    ]
    for emb, labels in cases:
        a = make_ours()(emb, labels)
        b = make_theirs()(emb, labels)
        assert torch.isfinite(a)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
