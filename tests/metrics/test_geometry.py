import math

import pytest
import torch
import torch.nn.functional as F

from pmlbal.metrics import alignment, class_alignment, effective_rank, embedding_geometry, uniformity


def test_alignment_closed_form():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zp = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert alignment(z, zp) == pytest.approx((2.0 + 0.0) / 2)


def test_uniformity_matches_naive_loop():
    z = torch.randn(30, 5)
    a = F.normalize(z, dim=1)
    vals = [math.exp(-2 * float(((a[i] - a[j]) ** 2).sum())) for i in range(30) for j in range(30) if i != j]
    assert uniformity(z, block=7) == pytest.approx(math.log(sum(vals) / len(vals)), rel=1e-5)


def test_effective_rank_extremes():
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)
    collapsed = torch.randn(50, 1) @ torch.randn(1, 8)
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-5)


def test_class_alignment_and_bundle():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert class_alignment(z, y) == 0.0
    out = embedding_geometry(z, labels=y)
    assert set(out) == {"uniformity", "effective_rank", "alignment"}


def test_bad_input():
    with pytest.raises(ValueError, match="paired"):
        alignment(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(torch.randn(1, 3))
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.randn(3))
