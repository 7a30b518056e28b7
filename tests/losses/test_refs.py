"""Which pairs and which form a call gets is decided by what the caller passed; only the losses with
a PML counterpart also follow PML's one identity rule, so that they stay drop-ins."""

import pytest
import torch
from pytorch_metric_learning.losses import SelfSupervisedLoss

from pytorch_metric_learning import losses as pml_losses

from pmlbal.losses import BalancedContrastiveLoss, BalancedNTXentLoss, BalancedSupConLoss, DHELLoss, KCLLoss
from pmlbal.losses.base import PMLCompatibleLoss
from tests.helpers import clustered
from tests.losses import naive
from tests.losses.test_reference import ALL_LOSSES, two_views


def _value_and_grads(loss_fn, emb, labels, ref_emb=None, ref_labels=None):
    e = emb.detach().clone().requires_grad_(True)
    r = None if ref_emb is None else ref_emb.detach().clone().requires_grad_(True)
    value = loss_fn(e, labels, None, r, ref_labels)
    grads = torch.autograd.grad(value, [e] + ([r] if r is not None else []), allow_unused=True)
    return value, grads


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0])
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y)


OWN_LOSSES = {k: v for k, v in ALL_LOSSES.items() if not isinstance(v(), PMLCompatibleLoss)}


@pytest.mark.parametrize("ours, theirs", [
    (lambda: BalancedNTXentLoss(temperature=0.5), lambda: pml_losses.NTXentLoss(temperature=0.5)),
    (lambda: BalancedSupConLoss(temperature=0.5), lambda: pml_losses.SupConLoss(temperature=0.5)),
    (lambda: BalancedContrastiveLoss(neg_margin=1.2), lambda: pml_losses.ContrastiveLoss(neg_margin=1.2)),
], ids=["ntxent", "supcon", "contrastive"])
@pytest.mark.parametrize("same_object", [True, False])
def test_pml_counterparts_give_pmls_numbers_in_every_call_form(ours, theirs, same_object):
    # PML drops the (i, i) pairs when ref_labels *is* labels, even with a separate ref_emb: a
    # drop-in must do the same (and gives the pairs when ref_labels is another tensor).
    za, zb, labels = two_views(10, 6)
    ref_labels = labels if same_object else labels.clone()
    mine = _value_and_grads(ours(), za, labels, zb, ref_labels)
    pml = _value_and_grads(theirs(), za, labels, zb, ref_labels)
    _assert_same(mine, pml)


@pytest.mark.parametrize("name", OWN_LOSSES)
def test_passing_the_labels_object_as_ref_labels_changes_nothing(name):
    # Losses without a PML counterpart decide from ref_emb alone, whatever objects are passed.
    za, zb, labels = two_views(10, 6)
    same = _value_and_grads(ALL_LOSSES[name](), za, labels, zb, labels)
    copy = _value_and_grads(ALL_LOSSES[name](), za, labels, zb, labels.clone())
    assert same[0].item() != 0.0
    _assert_same(same, copy)


@pytest.mark.parametrize("name", OWN_LOSSES)
def test_ref_emb_that_is_the_batch_is_still_a_separate_reference_set(name):
    emb, labels = clustered(4, 3, 6)
    e = emb.detach().clone().requires_grad_(True)
    as_object = ALL_LOSSES[name]()(e, labels, None, e, labels)
    (grad,) = torch.autograd.grad(as_object, e)
    # the same numbers in new tensors: identity must not matter
    copy, (g_emb, g_ref) = _value_and_grads(ALL_LOSSES[name](), emb, labels, emb, labels.clone())
    torch.testing.assert_close(as_object, copy)
    torch.testing.assert_close(grad, g_emb + g_ref)


def test_ref_emb_given_counts_every_pair_and_omitted_excludes_self_pairs():
    emb, labels = clustered(4, 3, 6)
    loss_fn = BalancedNTXentLoss(temperature=0.4, balance=0.8)
    torch.testing.assert_close(loss_fn(emb, labels), naive.ntxent(emb, labels, 0.4, 0.8))
    # With ref_emb = a copy of the batch, (i, i) is a positive pair of cosine 1 (docs/method.md, 'Conventions').
    s = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T / 0.4
    terms = []
    for i in range(len(labels)):
        neg = labels != labels[i]
        for p in torch.where(labels == labels[i])[0]:
            terms.append(-s[i, p] + 0.8 * torch.logsumexp(torch.cat([s[i, p:p + 1], s[i, neg]]), 0))
    with_self = loss_fn(emb, labels, ref_emb=emb.detach().clone(), ref_labels=labels.clone())
    torch.testing.assert_close(with_self, torch.stack(terms).mean())


@pytest.mark.parametrize("make", [lambda: DHELLoss(balance=0.5), lambda: KCLLoss(kernel="log")], ids=["dhel", "kcl"])
def test_two_view_losses_inside_self_supervised_loss(make):
    za, zb, labels = two_views(8, 5)
    # symmetric=False passes ref_emb: the two-view form
    torch.testing.assert_close(
        SelfSupervisedLoss(make(), symmetric=False)(za, zb), make()(za, labels, ref_emb=zb, ref_labels=labels)
    )
    # symmetric=True (PML's default) passes one batch of 2M with paired labels: the supervised form
    both, paired = torch.cat([za, zb]), torch.cat([labels, labels])
    torch.testing.assert_close(SelfSupervisedLoss(make())(za, zb), make()(both, paired))


def test_dhel_two_view_form_needs_ref_emb_not_a_distinct_labels_object():
    za, zb, labels = two_views(8, 5)
    loss = DHELLoss(temperature=0.3, balance=0.7)(za, labels, ref_emb=zb, ref_labels=labels)
    torch.testing.assert_close(loss, naive.dhel_two_view(za, zb, 0.3, 0.7))
    # a miner's pairs select the supervised form, ref_emb or not
    pairs = (torch.arange(8), torch.arange(8), torch.arange(8), (torch.arange(8) + 1) % 8)
    mined = DHELLoss(temperature=0.3, balance=0.7)(za, labels, pairs, zb, labels)
    a, b = torch.nn.functional.normalize(za, dim=1), torch.nn.functional.normalize(zb, dim=1)
    s = a @ b.T / 0.3
    expected = (-s.diagonal() + 0.7 * s[torch.arange(8), (torch.arange(8) + 1) % 8]).mean()
    torch.testing.assert_close(mined, expected)
