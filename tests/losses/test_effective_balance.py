"""`effective_balance` against its closed forms and against the gradient weights it stands for."""

import math

import pytest
import torch

from pmlbal.losses import (
    AlphaCLLoss,
    BalancedContrastiveLoss,
    BalancedNTXentLoss,
    BalancedSupConLoss,
    DHELLoss,
    KCLLoss,
    effective_balance,
)


def test_closed_forms():
    pooled = BalancedContrastiveLoss(aggregation="pooled", balance=0.5)
    assert effective_balance(pooled, 64, 4) == pytest.approx(0.5 * 60 / 3)
    assert effective_balance(BalancedContrastiveLoss(aggregation="mean", balance=0.5), 64, 4) == 0.5
    assert effective_balance(BalancedNTXentLoss(negatives="mean", balance=2.0), 256, 4) == pytest.approx(1.0)
    assert effective_balance(BalancedNTXentLoss(), 128, 4) == pytest.approx(124 / 125)
    assert effective_balance(BalancedNTXentLoss(decoupled=True, balance=0.3), 128, 4) == pytest.approx(0.3)
    assert effective_balance(BalancedNTXentLoss(decoupled=True, negatives="mean", balance=3.0), 16, 2) == 3.0
    assert effective_balance(BalancedSupConLoss(), 32, 4) == pytest.approx(28 / 31)
    # Two-view DHEL: one uniformity term per view, each with the alignment's weight.
    assert effective_balance(DHELLoss(balance=0.5), 64, 2) == pytest.approx(1.0)
    assert effective_balance(DHELLoss(balance=0.5, include_positive_view=False), 64, 2) == pytest.approx(0.5)
    # KCL: gamma for the gaussian kernel; the log energy kernel has half the alignment kernel's slope.
    assert effective_balance(KCLLoss(balance=16.0), 64, 2) == pytest.approx(16.0)
    assert effective_balance(KCLLoss(kernel="log", balance=16.0), 64, 2) == pytest.approx(8.0)
    # alpha-CL: the weights alpha multiply both terms alike.
    assert effective_balance(AlphaCLLoss(balance=2.5), 64, 4) == pytest.approx(2.5)
    assert effective_balance(AlphaCLLoss(weighting="quadratic", eps=0.0), 64, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="samples_per_class"):
        effective_balance(pooled, 64, 1)
    with pytest.raises(ValueError, match="batch_size"):
        effective_balance(pooled, 4, 4)
    with pytest.raises(ValueError, match="pmlbal loss"):
        effective_balance(torch.nn.MSELoss(), 64, 4)


def uninformed(n: int, cosine: float = 0.5) -> torch.Tensor:
    """n unit vectors whose pairwise cosine similarities all equal `cosine`."""
    basis = torch.eye(n + 1, dtype=torch.float64)
    return math.sqrt(1 - cosine) * basis[:n] + math.sqrt(cosine) * basis[n]


def gradient_weights(loss_fn, neg_of, *args) -> tuple[float, float]:
    """(total |d loss / d s| on positive pairs, the same on negative pairs), summed over every
    pair matrix the loss computes; `neg_of(rows, cols)` marks a matrix's negative entries."""
    mats = []

    def keep(module, inputs, out):
        out.retain_grad()
        mats.append((out, len(inputs[0]), len(inputs[1])))

    hook = loss_fn.distance.register_forward_hook(keep)
    try:
        loss_fn(*args).backward()
    finally:
        hook.remove()
    pos = neg = 0.0
    for mat, rows, cols in mats:
        g = mat.grad.abs() if mat.grad is not None else torch.zeros_like(mat)
        mask = neg_of(rows, cols)
        pos, neg = pos + float(g[~mask].sum()), neg + float(g[mask].sum())
    return pos, neg


def measured_balance(make, batch_size: int, samples_per_class: int, balance: float, two_view: bool) -> float:
    """Entropy-term weight on negatives / positive-term weight on positives, at equal similarities.

    The positive term's weight is read at balance 0; the entropy term's is what balance adds
    (every pmlbal loss is linear in balance).
    """
    if two_view:
        m = batch_size // 2
        z = uninformed(2 * m)
        labels = torch.arange(m)

        def run(b):
            za, zb = z[:m].clone().requires_grad_(True), z[m:].clone().requires_grad_(True)
            return gradient_weights(make(b), lambda r, c: ~torch.eye(r, c, dtype=torch.bool), za, labels, None, zb, labels)
    else:
        labels = torch.arange(batch_size // samples_per_class).repeat_interleave(samples_per_class)

        def run(b):
            emb = uninformed(batch_size).requires_grad_(True)
            return gradient_weights(make(b), lambda r, c: labels[:r, None] != labels[None, :c], emb, labels)

    pos_weight, _ = run(0.0)
    _, neg_weight = run(balance)
    return neg_weight / pos_weight


SUPERVISED = {
    "ntxent_sum": lambda b: BalancedNTXentLoss(temperature=0.2, balance=b),
    "ntxent_mean": lambda b: BalancedNTXentLoss(temperature=0.2, balance=b, negatives="mean"),
    "ntxent_decoupled": lambda b: BalancedNTXentLoss(temperature=0.2, balance=b, decoupled=True),
    "ntxent_mean_decoupled": lambda b: BalancedNTXentLoss(balance=b, negatives="mean", decoupled=True),
    "supcon": lambda b: BalancedSupConLoss(balance=b),
    # at cosine 0.5 every distance is 1: inside both margins, so every hinge is active
    "contrastive_nonzero": lambda b: BalancedContrastiveLoss(neg_margin=1.2, balance=b),
    "contrastive_mean": lambda b: BalancedContrastiveLoss(neg_margin=1.2, balance=b, aggregation="mean"),
    "contrastive_pooled": lambda b: BalancedContrastiveLoss(neg_margin=1.2, balance=b, aggregation="pooled"),
    "alpha_exp": lambda b: AlphaCLLoss(balance=b),
    "alpha_exp_eps0": lambda b: AlphaCLLoss(balance=b, eps=0.0),
    "alpha_inverse": lambda b: AlphaCLLoss(weighting="inverse", balance=b),
    "alpha_quadratic": lambda b: AlphaCLLoss(weighting="quadratic", balance=b),
}

TWO_VIEW = {
    "dhel": lambda b: DHELLoss(balance=b),
    "dhel_one_view": lambda b: DHELLoss(balance=b, include_positive_view=False),
    "kcl_gaussian": lambda b: KCLLoss(balance=b),
    "kcl_log": lambda b: KCLLoss(kernel="log", balance=b),
}


@pytest.mark.parametrize("name", SUPERVISED)
@pytest.mark.parametrize("batch_size, samples_per_class", [(12, 3), (16, 2), (24, 4)])
def test_equals_measured_gradient_ratio(name, batch_size, samples_per_class):
    make, balance = SUPERVISED[name], 0.7
    measured = measured_balance(make, batch_size, samples_per_class, balance, two_view=False)
    assert effective_balance(make(balance), batch_size, samples_per_class) == pytest.approx(measured, rel=1e-9)


@pytest.mark.parametrize("name", TWO_VIEW)
@pytest.mark.parametrize("pairs", [6, 10])
def test_equals_measured_gradient_ratio_of_two_view_form(name, pairs):
    # DHEL's and KCL's balance is defined on their two-view form (docs/method.md, 'DHEL and KCL'), where a
    # "class" is one pair of views: batch_size 2M, samples_per_class 2.
    make, balance = TWO_VIEW[name], 0.7
    measured = measured_balance(make, 2 * pairs, 2, balance, two_view=True)
    assert effective_balance(make(balance), 2 * pairs, 2) == pytest.approx(measured, rel=1e-9)


@pytest.mark.parametrize("name", TWO_VIEW)
def test_supervised_form_of_two_view_losses_has_one_uniformity_term(name):
    # As effective_balance's docstring says: half the two-view ratio (DHEL without the
    # positive view: the same), since one matrix's negatives replace the two views' own.
    make, balance = TWO_VIEW[name], 0.7
    two_view = effective_balance(make(balance), 12, 3)
    expected = two_view if name == "dhel_one_view" else two_view / 2
    assert measured_balance(make, 12, 3, balance, two_view=False) == pytest.approx(expected, rel=1e-9)
