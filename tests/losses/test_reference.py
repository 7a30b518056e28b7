"""Each loss against a slow, obviously-correct loop written from docs/method.md, the losses' sections."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import MeanReducer

from pmlbal.losses import (
    AlphaCLLoss,
    BalancedContrastiveLoss,
    BalancedNTXentLoss,
    BalancedSupConLoss,
    DHELLoss,
    KCLLoss,
)
from tests.helpers import clustered
from tests.losses import naive


def cos(x):
    z = F.normalize(x, dim=1)
    return z @ z.T


@pytest.mark.parametrize("balance", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("negatives", ["sum", "mean"])
@pytest.mark.parametrize("decoupled", [False, True])
def test_ntxent_matches_loop(balance, negatives, decoupled):
    emb, labels = clustered(4, 3, 6)
    loss = BalancedNTXentLoss(temperature=0.3, balance=balance, negatives=negatives, decoupled=decoupled)
    torch.testing.assert_close(loss(emb, labels), naive.ntxent(emb, labels, 0.3, balance, negatives, decoupled))


def test_supcon_matches_loop():
    emb, labels = clustered(4, 3, 6)
    tau, balance = 0.2, 0.5
    s = cos(emb) / tau
    per_anchor = []
    for i in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        others = [j for j in range(len(labels)) if j != i]
        per_anchor.append(-torch.stack([s[i, p] for p in pos]).mean() + balance * torch.logsumexp(s[i, others], 0))
    expected = torch.stack(per_anchor)
    # default reducer: mean over non-zero per-anchor losses
    expected = expected[expected != 0].mean()
    torch.testing.assert_close(BalancedSupConLoss(temperature=tau, balance=balance)(emb, labels), expected)


@pytest.mark.parametrize("aggregation", ["nonzero", "mean", "pooled"])
def test_contrastive_aggregations_match_loop(aggregation):
    emb, labels = clustered(4, 3, 6, spread=1.5)
    d = torch.cdist(F.normalize(emb, dim=1), F.normalize(emb, dim=1))
    pos_l, neg_l = [], []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i == j:
                continue
            if labels[i] == labels[j]:
                pos_l.append(torch.relu(d[i, j] - 0.1))
            else:
                neg_l.append(torch.relu(0.8 - d[i, j]))
    pos_l, neg_l, balance = torch.stack(pos_l), torch.stack(neg_l), 2.0
    if aggregation == "nonzero":
        expected = pos_l[pos_l > 0].mean() + balance * neg_l[neg_l > 0].mean()
    elif aggregation == "mean":
        expected = pos_l.mean() + balance * neg_l.mean()
    else:
        expected = (pos_l.sum() + balance * neg_l.sum()) / (len(pos_l) + len(neg_l))
    loss = BalancedContrastiveLoss(pos_margin=0.1, neg_margin=0.8, balance=balance, aggregation=aggregation)
    torch.testing.assert_close(loss(emb, labels), expected)


@pytest.mark.parametrize("aggregation", ["nonzero", "mean", "pooled"])
@pytest.mark.parametrize("case", ["self", "ref_emb", "cosine", "chunked", "one_class"])
def test_contrastive_dense_path_equals_per_pair_path(aggregation, case):
    """Under its default reducer the loss reduces densely (no negative pair lists); a reducer
    with statistics on takes PML's per-pair path. Both must give the same value and gradient."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer

    emb, labels = clustered(5, 4, 8, spread=1.2)
    emb = emb.detach().double()
    if case == "one_class":
        labels = torch.zeros_like(labels)
    kw = dict(pos_margin=0.1, neg_margin=0.9, balance=1.5, aggregation=aggregation)
    if case == "cosine":
        kw.update(distance=CosineSimilarity(), pos_margin=0.9, neg_margin=0.2)
    if case == "chunked":
        kw.update(chunk_size=7)
    slow_reducer = (AvgNonZeroReducer if aggregation == "nonzero" else MeanReducer)(collect_stats=True)
    dense, per_pair = BalancedContrastiveLoss(**kw), BalancedContrastiveLoss(reducer=slow_reducer, **kw)
    assert dense._default_reduction() and not per_pair._default_reduction()
    args = (labels,) if case != "ref_emb" else (labels, None, emb[:9].detach() + 0.1, labels[:9])
    grads = []
    for loss in (dense, per_pair):
        x = emb.detach().clone().requires_grad_(True)
        value = loss(x, *args)
        value.backward()
        grads.append((value.detach(), x.grad))
    assert grads[0][1] is not None and grads[0][1].abs().sum() > 0
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def two_views(m=8, d=6):
    g = torch.Generator().manual_seed(3)
    za = torch.randn(m, d, dtype=torch.float64, generator=g)
    zb = za + 0.5 * torch.randn(m, d, dtype=torch.float64, generator=g)
    return za.requires_grad_(True), zb.requires_grad_(True), torch.arange(m)


@pytest.mark.parametrize("include_positive_view", [True, False])
def test_dhel_two_view_matches_loop(include_positive_view):
    za, zb, labels = two_views()
    loss = DHELLoss(temperature=0.3, balance=0.7, include_positive_view=include_positive_view)
    expected = naive.dhel_two_view(za, zb, 0.3, 0.7, include_positive_view)
    torch.testing.assert_close(loss(za, labels, ref_emb=zb, ref_labels=labels), expected)


def test_dhel_supervised_form_keeps_positives_out_of_denominator():
    emb, labels = clustered(3, 3, 5)
    s = cos(emb) / 0.3
    per = []
    for i in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[i]]
        per.append(-s[i, pos].mean() + 2.0 * torch.logsumexp(s[i, neg], 0))
    torch.testing.assert_close(DHELLoss(balance=2.0)(emb, labels), torch.stack(per).mean())


@pytest.mark.parametrize("kernel", ["gaussian", "log"])
def test_kcl_two_view_matches_loop(kernel):
    za, zb, labels = two_views()
    t, gamma = 2.0, 16.0
    a, b = F.normalize(za, dim=1), F.normalize(zb, dim=1)

    def sq(x, y):
        return ((x - y) ** 2).sum()

    if kernel == "gaussian":
        k_align = k_energy = lambda x, y: torch.exp(-t * sq(x, y))  # noqa: E731
    else:
        k_align = lambda x, y: -torch.log(t * sq(x, y) + 1)  # noqa: E731
        k_energy = lambda x, y: -0.5 * torch.log(t * sq(x, y) + 1)  # noqa: E731
    m = len(a)
    align = torch.stack([k_align(a[i], b[i]) for i in range(m)]).mean()
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    e_a = torch.stack([k_energy(a[i], a[j]) for i, j in pairs]).mean()
    e_b = torch.stack([k_energy(b[i], b[j]) for i, j in pairs]).mean()
    expected = -2 * align + gamma * (e_a + e_b)
    loss = KCLLoss(kernel=kernel, t=t, balance=gamma)(za, labels, ref_emb=zb, ref_labels=labels)
    torch.testing.assert_close(loss, expected)


def test_kcl_expected_loss_does_not_depend_on_batch_size():
    # The paper's claim: KCL's loss is an unbiased mean over pairs, so its expectation
    # over random batches is the same at every batch size (InfoNCE's is not).
    g = torch.Generator().manual_seed(0)
    pool_a = torch.randn(4096, 8, generator=g, dtype=torch.float64)
    pool_b = pool_a + 0.7 * torch.randn(4096, 8, generator=g, dtype=torch.float64)
    kcl, nce = KCLLoss(), BalancedNTXentLoss(temperature=0.5)
    means = {"kcl": [], "nce": []}
    for bsz in (16, 256):
        vals_k, vals_n = [], []
        for _ in range(60):
            idx = torch.randperm(4096, generator=g)[:bsz]
            lab = torch.arange(bsz)
            vals_k.append(kcl(pool_a[idx], lab, ref_emb=pool_b[idx], ref_labels=lab))
            vals_n.append(nce(pool_a[idx], lab, ref_emb=pool_b[idx], ref_labels=lab.clone()))  # PML: not labels itself
        means["kcl"].append(torch.stack(vals_k).mean())
        means["nce"].append(torch.stack(vals_n).mean())
    assert abs(means["kcl"][0] - means["kcl"][1]) < 0.05 * abs(means["kcl"][1])
    assert means["nce"][1] - means["nce"][0] > 1.0  # grows like log(B)


def test_alpha_cl_gradient_is_tau_times_decoupled_infonce():
    za, zb, labels = two_views()
    tau = 0.5
    alpha = AlphaCLLoss(weighting="exp", temperature=tau, exponent=1.0, eps=0.0)
    dcl = BalancedNTXentLoss(temperature=tau, decoupled=True)
    value = dcl(za, labels, ref_emb=zb, ref_labels=labels.clone())  # PML rule: not the labels object
    assert value.item() != 0.0
    ga = torch.autograd.grad(alpha(za, labels, ref_emb=zb, ref_labels=labels), (za, zb))
    gd = torch.autograd.grad(value, (za, zb))
    for x, y in zip(ga, gd):
        torch.testing.assert_close(x, tau * y)


@pytest.mark.parametrize("weighting", ["exp", "inverse", "quadratic"])
def test_alpha_cl_matches_loop_with_frozen_alpha(weighting):
    za, zb, labels = two_views()
    tau, a_exp, eps, k = 0.5, 2.0, 0.1, 1.5
    a, b = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    s = a @ b.T
    total = []
    for i in range(len(a)):
        negs = [j for j in range(len(a)) if j != i]
        x = torch.stack([(1 - s[i, j]).detach().clamp(min=0) ** a_exp for j in negs])
        if weighting == "exp":
            w = torch.exp(-x / tau)
        elif weighting == "inverse":
            w = (x + tau) ** (-k)
        else:
            # simplex projection by bisection on mu: sum_j [mu - x_j]_+ = tau
            lo, hi = float(x.min()) - 1, float(x.max()) + tau + 1
            for _ in range(200):
                mu = (lo + hi) / 2
                lo, hi = (mu, hi) if float(torch.relu(mu - x).sum()) < tau else (lo, mu)
            w = torch.relu(mu - x) / tau
        al = w / (w.sum() + eps * len(negs))
        total.append(sum(al[q] * (s[i, j] - s[i, i]) for q, j in enumerate(negs)))
    expected = torch.stack(total).mean()
    loss = AlphaCLLoss(weighting=weighting, temperature=tau, exponent=a_exp, eps=eps, inverse_power=k)
    value = loss(za, labels, ref_emb=zb, ref_labels=labels)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-8)
    g_ours = torch.autograd.grad(value, (za, zb))
    g_ref = torch.autograd.grad(expected, (za, zb))
    for x, y in zip(g_ours, g_ref):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-8)


ALL_LOSSES = {
    "ntxent": lambda **kw: BalancedNTXentLoss(temperature=0.5, balance=0.7, **kw),
    "ntxent_mean_dec": lambda **kw: BalancedNTXentLoss(temperature=0.5, negatives="mean", decoupled=True, **kw),
    "supcon": lambda **kw: BalancedSupConLoss(temperature=0.5, balance=1.3, **kw),
    "contrastive": lambda **kw: BalancedContrastiveLoss(pos_margin=0.1, neg_margin=1.2, balance=2.0, aggregation="mean", **kw),
    "contrastive_pooled": lambda **kw: BalancedContrastiveLoss(neg_margin=1.2, aggregation="pooled", **kw),
    "dhel": lambda **kw: DHELLoss(balance=0.5, **kw),
    "kcl_gauss": lambda **kw: KCLLoss(**kw),
    "kcl_log": lambda **kw: KCLLoss(kernel="log", **kw),
    "alpha_exp": lambda **kw: AlphaCLLoss(**kw),
    "alpha_quad": lambda **kw: AlphaCLLoss(weighting="quadratic", **kw),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("mode", ["labels", "two_view"])
def test_gradcheck_float64(name, mode):
    loss_fn = ALL_LOSSES[name]()
    if name.startswith("alpha"):
        pytest.skip("alpha has no gradient by definition; checked against a frozen-alpha loop above")
    if mode == "labels":
        emb, labels = clustered(3, 3, 4)
        emb = emb.detach().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (emb,))
    else:
        za, zb, labels = two_views(6, 4)
        ref_labels = labels.clone()  # another tensor: PML (and its drop-ins) drop (i, i) when it *is* labels
        assert loss_fn(za, labels, ref_emb=zb, ref_labels=ref_labels).item() != 0.0
        assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, labels, ref_emb=b, ref_labels=ref_labels), (za, zb))


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("mode", ["labels", "two_view", "miner"])
def test_chunked_equals_unchunked(name, mode):
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    emb, labels = clustered(5, 4, 8)
    ref = ref_labels = it = None
    if mode == "two_view":
        emb, ref, labels = two_views(20, 8)
        ref_labels = labels.clone()  # another tensor: PML (and its drop-ins) drop (i, i) when it *is* labels
    elif mode == "miner":
        it = MultiSimilarityMiner(epsilon=0.5)(emb.detach(), labels)
    values, grads = [], []
    for chunk in (None, 3, 7):
        e = emb.detach().clone().requires_grad_(True)
        r = None if ref is None else ref.detach().clone().requires_grad_(True)
        loss_fn = ALL_LOSSES[name](chunk_size=chunk)
        v = loss_fn(e, labels, it, r, ref_labels)
        values.append(v)
        grads.append(torch.autograd.grad(v, [e] + ([r] if r is not None else [])))
        terms = (loss_fn.pos_term, loss_fn.entropy_term)
        if chunk is None:
            terms0 = terms
        else:
            torch.testing.assert_close(terms, terms0)
    for v, g in zip(values[1:], grads[1:]):
        torch.testing.assert_close(v, values[0])
        for x, y in zip(g, grads[0]):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_and_autocast(name, dtype):
    emb, labels = clustered(8, 4, 16, dtype=torch.float32)
    ref = ALL_LOSSES[name]()(emb, labels)
    low = emb.detach().to(dtype).requires_grad_(True)
    value = ALL_LOSSES[name]()(low, labels)
    # Exp/log run in fp32; PML's MultipleReducers hands back the embeddings' dtype, which is fine.
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(low.grad.float()).all()
    torch.testing.assert_close(value.float(), ref.float(), rtol=0.05, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ALL_LOSSES[name]()(emb, labels)
    torch.testing.assert_close(auto.float(), ref.float(), rtol=0.05, atol=0.05)


LP_LOSSES = {
    "ntxent": lambda: BalancedNTXentLoss(temperature=0.5, balance=0.7, distance=LpDistance()),
    "supcon": lambda: BalancedSupConLoss(temperature=0.5, distance=LpDistance()),
    "contrastive": lambda: BalancedContrastiveLoss(neg_margin=1.2, balance=2.0),
    "contrastive_pairs": lambda: BalancedContrastiveLoss(neg_margin=1.2, reducer=MeanReducer()),
    "dhel": lambda: DHELLoss(distance=LpDistance()),
}


@pytest.mark.parametrize("name", LP_LOSSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_ref", [False, True])
def test_low_precision_lp_distance(name, dtype, with_ref):
    # Under 25 rows torch.cdist takes its direct kernel, which has no bf16 on the CPU, and PML's
    # fp16 path gathers B x M x D pairs: the losses must still work, and agree with fp32.
    emb, labels = clustered(3, 4, 8, dtype=torch.float32)
    kw = {"ref_emb": emb.detach()[:7] * 1.1, "ref_labels": labels[:7]} if with_ref else {}
    ref = LP_LOSSES[name]()(emb, labels, **kw)
    low = emb.detach().to(dtype).requires_grad_(True)
    low_kw = {k: v.to(dtype) if v.is_floating_point() else v for k, v in kw.items()}
    value = LP_LOSSES[name]()(low, labels, **low_kw)
    value.backward()
    assert torch.isfinite(low.grad.float()).all()
    torch.testing.assert_close(value.float(), ref.float(), rtol=0.05, atol=0.05)


def test_anchor_without_negative_contributes_nothing_to_entropy():
    # Decoupled NT-Xent of a single-class batch would be log(0): it must be a clean 0.
    emb = torch.randn(4, 3, requires_grad=True)
    loss_fn = BalancedNTXentLoss(decoupled=True, balance=2.0)
    v = loss_fn(emb, torch.zeros(4, dtype=torch.long))
    v.backward()
    assert v.item() == 0.0 and torch.isfinite(emb.grad).all()


def test_terms_are_recorded_and_balance_scales_only_entropy():
    emb, labels = clustered(4, 4, 8)
    a, b = BalancedNTXentLoss(balance=1.0), BalancedNTXentLoss(balance=3.0)
    va, vb = a(emb, labels), b(emb, labels)
    torch.testing.assert_close(a.pos_term, b.pos_term)
    torch.testing.assert_close(a.entropy_term, b.entropy_term)
    torch.testing.assert_close(va, a.pos_term + a.entropy_term)
    torch.testing.assert_close(vb, b.pos_term + 3.0 * b.entropy_term)
    assert not a.pos_term.requires_grad
    assert "pos_term" in a._record_these and "entropy_term" in a._record_these


@pytest.mark.parametrize(
    "ctor, word",
    [
        (lambda: BalancedNTXentLoss(temperature=0), "temperature"),
        (lambda: BalancedNTXentLoss(temperature=-1.0), "temperature"),
        (lambda: BalancedNTXentLoss(negatives="max"), "negatives"),
        (lambda: BalancedNTXentLoss(balance=-1), "balance"),
        (lambda: BalancedNTXentLoss(balance=math.nan), "balance"),
        (lambda: BalancedSupConLoss(temperature=0.0), "temperature"),
        (lambda: BalancedContrastiveLoss(aggregation="median"), "aggregation"),
        (lambda: KCLLoss(kernel="laplace"), "kernel"),
        (lambda: KCLLoss(t=0), "t must"),
        (lambda: DHELLoss(temperature=0), "temperature"),
        (lambda: AlphaCLLoss(weighting="linear"), "weighting"),
        (lambda: AlphaCLLoss(eps=-0.1), "eps"),
        (lambda: BalancedNTXentLoss(chunk_size=0), "chunk_size"),
    ],
)
def test_bad_arguments_fail_at_construction(ctor, word):
    with pytest.raises(ValueError, match=word):
        ctor()


def test_kcl_refuses_other_distances():
    from pytorch_metric_learning.distances import LpDistance

    with pytest.raises(ValueError, match="CosineSimilarity"):
        KCLLoss(distance=LpDistance())


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda f: f(torch.randn(4, 3), torch.tensor([0, 0, 1])), "labels has 3 entries"),
        (lambda f: f(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), "1-D"),
        (lambda f: f(torch.randn(4), torch.zeros(4, dtype=torch.long)), "2-D"),
        (lambda f: f(torch.randn(4, 3), torch.zeros(4), ref_emb=torch.randn(4, 2), ref_labels=torch.zeros(4)), "dimension"),
        (lambda f: f(torch.randn(4, 3), torch.zeros(4), ref_emb=torch.randn(4, 3)), "ref_labels"),
        (lambda f: f(torch.randn(4, 3), None, indices_tuple=(torch.tensor([0]), torch.tensor([1]))), "indices_tuple"),
    ],
)
def test_bad_inputs_raise_value_error(call, word):
    for ctor in ALL_LOSSES.values():
        with pytest.raises(ValueError, match=word):
            call(ctor())
