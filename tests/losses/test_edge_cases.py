"""Values docs/method.md ("Conventions") fixes where a term has nothing to work on, and at temperatures where exp() overflows."""

from functools import partial

import pytest
import torch

from pmlbal.losses import (
    AlphaCLLoss,
    BalancedContrastiveLoss,
    BalancedNTXentLoss,
    BalancedSupConLoss,
    DHELLoss,
    KCLLoss,
)
from pmlbal.losses._core import masked_logsumexp
from tests.helpers import clustered
from tests.losses import naive

# name: (the loss under test, its loop from docs/method.md with the same arguments)
LOSSES = {
    "ntxent": (
        lambda: BalancedNTXentLoss(temperature=0.5, balance=0.7),
        partial(naive.ntxent, temperature=0.5, balance=0.7),
    ),
    "ntxent_mean_dec": (
        lambda: BalancedNTXentLoss(temperature=0.5, negatives="mean", decoupled=True),
        partial(naive.ntxent, temperature=0.5, negatives="mean", decoupled=True),
    ),
    "supcon": (
        lambda: BalancedSupConLoss(temperature=0.5, balance=1.3),
        partial(naive.supcon, temperature=0.5, balance=1.3),
    ),
    "contrastive": (
        lambda: BalancedContrastiveLoss(pos_margin=0.1, neg_margin=1.2, balance=2.0),
        partial(naive.contrastive, pos_margin=0.1, neg_margin=1.2, balance=2.0),
    ),
    "contrastive_mean": (
        lambda: BalancedContrastiveLoss(pos_margin=0.1, neg_margin=1.2, balance=2.0, aggregation="mean"),
        partial(naive.contrastive, pos_margin=0.1, neg_margin=1.2, balance=2.0, aggregation="mean"),
    ),
    "contrastive_pooled": (
        lambda: BalancedContrastiveLoss(neg_margin=1.2, aggregation="pooled"),
        partial(naive.contrastive, pos_margin=0.0, neg_margin=1.2, aggregation="pooled"),
    ),
    "dhel": (lambda: DHELLoss(balance=0.5), partial(naive.dhel, temperature=0.3, balance=0.5)),
    "kcl_gauss": (lambda: KCLLoss(), naive.kcl),
    "kcl_log": (lambda: KCLLoss(kernel="log", balance=3.0), partial(naive.kcl, kernel="log", balance=3.0)),
    "alpha_exp": (lambda: AlphaCLLoss(balance=1.5), partial(naive.alpha_cl, balance=1.5)),
    "alpha_inverse": (
        lambda: AlphaCLLoss(weighting="inverse", inverse_power=1.5),
        partial(naive.alpha_cl, weighting="inverse", inverse_power=1.5),
    ),
    "alpha_quad": (
        lambda: AlphaCLLoss(weighting="quadratic", exponent=2.0),
        partial(naive.alpha_cl, weighting="quadratic", exponent=2.0),
    ),
}

BATCHES = {
    "one_class": torch.zeros(6, dtype=torch.long),  # no negatives
    "singletons": torch.arange(6),  # no positives
    "batch_of_two_same": torch.tensor([0, 0]),
    "batch_of_two_diff": torch.tensor([0, 1]),
    "some_without_positive": torch.tensor([0, 0, 1, 2, 3]),
    "regular": torch.arange(4).repeat_interleave(3),
}


def _grad(value, x):
    (g,) = torch.autograd.grad(value, x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("batch", BATCHES)
def test_value_and_gradient_equal_the_loop(name, batch):
    labels = BATCHES[batch]
    emb = torch.randn(len(labels), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(len(labels)))
    make, loop = LOSSES[name]
    ours, theirs = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    value, expected = make()(ours, labels), loop(theirs, labels)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(_grad(value, ours), _grad(expected, theirs))


def test_single_class_batch_gives_exactly_zero_where_spec_says_so():
    # No negative pair: NT-Xent, SupCon and alpha-CL return PML's zero loss, never log(0).
    emb, labels = torch.randn(5, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    for loss_fn in (BalancedNTXentLoss(decoupled=True), BalancedSupConLoss(balance=0.5), AlphaCLLoss()):
        assert loss_fn(emb, labels).item() == 0.0
        assert loss_fn.pos_term.item() == 0.0 and loss_fn.entropy_term.item() == 0.0


SMALL_TAU = 0.005  # logits reach 1/0.005 = 200: exp(200) overflows float32 (max ~ e^88.7)

SHARP = {
    "ntxent": (lambda t: BalancedNTXentLoss(temperature=t, balance=0.7), partial(naive.ntxent, balance=0.7)),
    "ntxent_mean": (
        lambda t: BalancedNTXentLoss(temperature=t, negatives="mean"),
        partial(naive.ntxent, negatives="mean"),
    ),
    "ntxent_decoupled": (
        lambda t: BalancedNTXentLoss(temperature=t, decoupled=True),
        partial(naive.ntxent, decoupled=True),
    ),
    "supcon": (lambda t: BalancedSupConLoss(temperature=t, balance=1.3), partial(naive.supcon, balance=1.3)),
    "dhel": (lambda t: DHELLoss(temperature=t, balance=0.5), partial(naive.dhel, balance=0.5)),
}


def _assert_close_to_float64(value, grad, expected, expected_grad):
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    # float32 cosines carry ~1e-7 absolute error, i.e. ~2e-5 in a logit of 200.
    torch.testing.assert_close(value.double(), expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-3, atol=1e-3 * float(expected_grad.abs().max()))


@pytest.mark.parametrize("name", SHARP)
def test_small_temperature_in_float32_equals_float64_loop(name):
    emb, labels = clustered(4, 3, 6, spread=1.0)
    x32 = emb.detach().float().requires_grad_(True)
    x64 = x32.detach().double().requires_grad_(True)  # the same numbers, in float64
    make, loop = SHARP[name]
    value, expected = make(SMALL_TAU)(x32, labels), loop(x64, labels, SMALL_TAU)
    assert expected.abs() > 1.0  # a sharp loss, not a saturated 0
    _assert_close_to_float64(value, _grad(value, x32), expected, _grad(expected, x64))


@pytest.mark.parametrize("include_positive_view", [True, False])
def test_small_temperature_two_view_dhel_in_float32_equals_float64_loop(include_positive_view):
    g = torch.Generator().manual_seed(4)
    za, zb = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    labels = torch.arange(8)
    loss_fn = DHELLoss(temperature=SMALL_TAU, balance=0.5, include_positive_view=include_positive_view)
    a32, b32 = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    a64, b64 = za.double().requires_grad_(True), zb.double().requires_grad_(True)
    value = loss_fn(a32, labels, ref_emb=b32, ref_labels=labels)
    expected = naive.dhel_two_view(a64, b64, SMALL_TAU, 0.5, include_positive_view)
    _assert_close_to_float64(value, _grad(value, a32), expected, _grad(expected, a64))


def test_masked_logsumexp_shifts_by_the_masked_row_max():
    x = torch.tensor([[200.0, 199.0, 5000.0], [-300.0, -301.0, 0.0], [7.0, 8.0, 9.0]], requires_grad=True)
    keep = torch.tensor([[True, True, False], [True, True, False], [False, False, False]])
    lse, has_any = masked_logsumexp(x, keep)
    x64 = x.detach().double()
    expected = torch.stack([torch.logsumexp(x64[0, :2], 0), torch.logsumexp(x64[1, :2], 0)])
    torch.testing.assert_close(lse[:2].double(), expected)
    assert lse[2].item() == 0.0 and has_any.tolist() == [True, True, False]
    lse.sum().backward()
    # softmax weights on kept entries; exactly 0 on masked ones (the 5000 too)
    torch.testing.assert_close(x.grad[:, :2].sum(dim=1), torch.tensor([1.0, 1.0, 0.0]))
    assert (x.grad[~keep] == 0).all()


@pytest.mark.parametrize("name", __import__("pmlbal").list_losses())
@pytest.mark.parametrize("two_view", [False, True])
def test_every_loss_gives_zero_with_a_gradient_on_an_empty_batch(name, two_view):
    loss_fn = __import__("pmlbal").create(name)
    emb = torch.zeros(0, 8, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    kwargs = {"ref_emb": torch.zeros(0, 8), "ref_labels": labels} if two_view else {}
    value = loss_fn(emb, labels, **kwargs)
    value.backward()
    assert value.item() == 0.0 and emb.grad is not None and emb.grad.shape == (0, 8)


@pytest.mark.parametrize("name", __import__("pmlbal").list_losses())
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_float_embeddings_are_refused_naming_the_dtype(name, dtype):
    loss_fn = __import__("pmlbal").create(name)
    with pytest.raises(ValueError, match=f"floating-point tensor.*{str(dtype).split('.')[1]}"):
        loss_fn(torch.ones(8, 4, dtype=dtype), torch.arange(8) // 2)
    with pytest.raises(ValueError, match="ref_emb must be a floating-point"):
        loss_fn(torch.randn(8, 4), torch.arange(8) // 2, ref_emb=torch.ones(8, 4, dtype=dtype),
                ref_labels=torch.arange(8) // 2)
