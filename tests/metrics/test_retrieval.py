"""Retrieval metrics against PML's AccuracyCalculator and a naive per-query loop."""

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalc

from pmlbal.metrics import AccuracyCalculator, retrieval_metrics

PML_NAMES = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


def data(kind, n=400, dim=16, classes=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    if kind == "random":
        return torch.randn(n, dim, generator=g), labels
    centres = torch.randn(classes, dim, generator=g)
    return centres[labels] + 0.8 * torch.randn(n, dim, generator=g), labels


def pml(query, ql, ref=None, rl=None):
    calc = PMLCalc(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"))
    return calc.get_accuracy(query, ql, ref, rl) if ref is not None else calc.get_accuracy(query, ql)


def naive_recalls(query, ql, ref, rl, ks, self_ref):
    """Recall@k for each k by brute force, one query at a time: neighbours by (squared distance, index)."""
    q, r = np.asarray(query, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    ql, rl = np.asarray(ql), np.asarray(rl)
    hits, n = dict.fromkeys(ks, 0), 0
    for i in range(len(q)):
        d = ((r - q[i]) ** 2).sum(axis=1)
        cand = np.arange(len(r))
        if self_ref:
            cand = cand[cand != i]
        if not (rl[cand] == ql[i]).any():
            continue  # lone query
        n += 1
        nearest = cand[np.lexsort((cand, d[cand]))]
        for k in ks:
            hits[k] += bool((rl[nearest[:k]] == ql[i]).any())
    return {k: h / n for k, h in hits.items()}


def naive_recall(query, ql, ref, rl, k, self_ref):
    return naive_recalls(query, ql, ref, rl, (k,), self_ref)[k]


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_self_reference_matches_pml_and_naive(kind, backend):
    x, y = data(kind)
    ours = retrieval_metrics(x, y, backend=backend)
    theirs = pml(x, y)
    for name, pml_name in PML_NAMES.items():
        assert ours[name] == pytest.approx(theirs[pml_name], abs=1e-12)
    recall = naive_recalls(x, y, x, y, (1, 2, 4, 8), True)
    for k in (1, 2, 4, 8):
        assert ours[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_separate_reference_with_lone_queries_and_singletons(backend):
    q, ql = data("clustered", n=300, seed=1)
    r, rl = data("clustered", n=200, seed=2)
    ql = ql.clone()
    ql[:7] = 999  # lone: class absent from the reference set
    rl = rl.clone()
    rl[:3] = torch.tensor([500, 501, 502])  # singleton reference classes
    ql[7:10] = torch.tensor([500, 501, 502])
    ours = retrieval_metrics(q, ql, r, rl, backend=backend)
    theirs = pml(q, ql, r, rl)
    assert ours["lone_queries"] == 7
    for name, pml_name in PML_NAMES.items():
        assert ours[name] == pytest.approx(theirs[pml_name], abs=1e-12)
    assert ours["recall@4"] == pytest.approx(naive_recall(q, ql, r, rl, 4, False), abs=1e-12)


def test_self_reference_singletons_are_lone():
    x, y = data("clustered", n=120)
    y = y.clone()
    y[:5] = torch.arange(100, 105)  # each alone in the set: no other item of its class
    ours = retrieval_metrics(x, y)
    assert ours["lone_queries"] == 5
    assert ours["map_at_r"] == pytest.approx(pml(x, y)["mean_average_precision_at_r"], abs=1e-12)


def test_backends_agree_and_blocks_do_not_matter():
    x, y = data("clustered", n=700, dim=32, classes=40, seed=4)
    a = retrieval_metrics(x, y, backend="faiss", ks=(1, 10, 100))
    b = retrieval_metrics(x, y, backend="torch", ks=(1, 10, 100), block_size=37)
    assert a.keys() == b.keys()
    theirs = pml(x, y)
    recall = naive_recalls(x, y, x, y, (1, 10, 100), True)
    for out in (a, b):  # both against the references, not only against each other
        for name, pml_name in PML_NAMES.items():
            assert out[name] == pytest.approx(theirs[pml_name], abs=1e-12)
        for k in (1, 10, 100):
            assert out[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)
    for key in a:  # per-block float sums differ only in the last bit
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_duplicates_are_neighbours_not_self():
    # The query is removed by index: an exact duplicate of it still counts as a neighbour.
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.1]])
    y = torch.tensor([0, 0, 1, 1])
    out = retrieval_metrics(x, y, ks=(1,))
    assert out["recall@1"] == 1.0 and out["map_at_r"] == 1.0


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_inner_product_metric_and_numpy_input(backend):
    # On unit vectors the largest dot product is the smallest distance: PML's (Euclidean) values hold.
    x, y = data("clustered")
    x = torch.nn.functional.normalize(x, dim=1)
    a = retrieval_metrics(x.numpy(), y.numpy(), metric="inner_product", backend=backend)
    theirs = pml(x, y)
    for name, pml_name in PML_NAMES.items():
        assert a[name] == pytest.approx(theirs[pml_name], abs=1e-9)
    recall = naive_recalls(x, y, x, y, (1, 2, 4, 8), True)
    for k in (1, 2, 4, 8):
        assert a[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-9)
    assert a["lone_queries"] == 0


def test_accuracy_calculator_adds_recall_and_keeps_pml_values():
    x, y = data("clustered")
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "recall_at_k"),
        recall_ks=(1, 2, 4, 8), k="max_bin_count", device=torch.device("cpu"),
    )
    ours = calc.get_accuracy(x, y)
    theirs = pml(x, y)
    for pml_name in PML_NAMES.values():
        assert ours[pml_name] == pytest.approx(theirs[pml_name], abs=1e-12)
    recall = naive_recalls(x, y, x, y, (1, 2, 4, 8), True)  # not retrieval_metrics: it shares the search
    for k in (1, 2, 4, 8):  # PML's calculator averages in fp32
        assert ours[f"recall_at_{k}"] == pytest.approx(recall[k], abs=1e-6)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(4)), "one label per query"),
        (lambda: retrieval_metrics(torch.randn(5), torch.zeros(5)), "2-D"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), torch.randn(5, 4), torch.zeros(5)), "dimension"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), ks=(1, 5)), "larger than the reference"),
        (lambda: retrieval_metrics(torch.tensor([[math.nan, 0.0], [0.0, 1.0]]), torch.zeros(2), ks=(1,)), "NaN"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), torch.randn(4, 3), torch.zeros(3)), "reference_labels"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), ks=(0,)), "positive"),
        (lambda: retrieval_metrics(torch.randn(0, 3), torch.zeros(0), ks=(1,)), "query is empty"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), torch.randn(0, 3), torch.zeros(0), ks=(1,)), "reference is empty"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), ks=(1,), backend="annoy"), "backend"),
        (lambda: retrieval_metrics(torch.randn(5, 3), torch.zeros(5), ks=(1,), include=("ndcg",)), "unknown metrics"),
    ],
)
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_embeddings_are_searched_in_fp32(backend, dtype):
    # An AMP model hands bf16 embeddings to evaluation; numpy (faiss's input) has no bf16.
    x, y = data("clustered")
    low = x.to(dtype)
    got = retrieval_metrics(low, y, backend=backend)
    exact = low.float()  # the low-precision values, exactly, searched in fp32 by the references
    theirs = pml(exact, y)
    for name, pml_name in PML_NAMES.items():
        assert got[name] == pytest.approx(theirs[pml_name], abs=1e-12)
    recall = naive_recalls(exact, y, exact, y, (1, 2, 4, 8), True)
    for k in (1, 2, 4, 8):
        assert got[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)


def test_all_lone_gives_nan_not_crash():
    out = retrieval_metrics(torch.randn(4, 3), torch.arange(4), ks=(1,))
    assert out["lone_queries"] == 4 and np.isnan(out["recall@1"])


def naive_map_at_r(x, y):
    """MAP@R by brute force with neighbours ordered by (squared distance, index), query excluded."""
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    total, n = 0.0, 0
    for i in range(len(x)):
        cand = np.array([j for j in range(len(x)) if j != i])
        r = int((y[cand] == y[i]).sum())
        if r == 0:
            continue
        d = ((x[cand] - x[i]) ** 2).sum(axis=1)
        same = y[cand[np.lexsort((cand, d))]][:r] == y[i]
        precision = np.cumsum(same) / np.arange(1, r + 1)
        total += float((precision * same).sum() / r)
        n += 1
    return total / n


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_ties_are_ordered_by_reference_index(backend):
    # Four distinct points, each repeated with mixed labels: every neighbour list is full of exact
    # ties, so the order among equal distances decides Recall@1 and MAP@R.
    base = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    x = base.repeat_interleave(6, dim=0)
    y = torch.tensor([0, 1, 1, 0, 2, 1] * 4)
    ours = retrieval_metrics(x, y, ks=(1, 2), backend=backend)
    recall = naive_recalls(x, y, x, y, (1, 2), True)
    assert ours["recall@1"] == pytest.approx(recall[1], abs=1e-12)
    assert ours["recall@2"] == pytest.approx(recall[2], abs=1e-12)
    assert ours["map_at_r"] == pytest.approx(naive_map_at_r(x, y), abs=1e-12)


def test_sort_rows_matches_a_naive_sort_by_distance_then_index():
    from pmlbal.metrics.retrieval import _sort_rows

    g = torch.Generator().manual_seed(0)
    dist = torch.randint(0, 6, (40, 30), generator=g).float()  # many ties per row
    idx = torch.stack([torch.randperm(100, generator=g)[:30] for _ in range(40)])
    sorted_rows = torch.arange(40) < 30  # as the backends return them; the last 10 rows unsorted
    order = torch.argsort(dist[sorted_rows], dim=1, stable=True)
    dist[sorted_rows] = torch.gather(dist[sorted_rows], 1, order)
    idx[sorted_rows] = torch.gather(idx[sorted_rows], 1, order)
    d, i = _sort_rows(dist, idx)
    for row in range(40):
        want = sorted(zip(dist[row].tolist(), idx[row].tolist()))
        assert list(zip(d[row].tolist(), i[row].tolist())) == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("where", ["query", "reference"])
@pytest.mark.parametrize("values", [(math.nan,), (math.inf,), (-math.inf, math.inf), (3e38, 3e38), (1e308, 1e308)])
def test_non_finite_check_agrees_with_isfinite(dtype, where, values):
    # The check is one fp64 sum per tensor (no n x d temporary): it must refuse exactly what
    # torch.isfinite refuses, including +inf and -inf together and finite values whose sum overflows fp32.
    q, r = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    bad = q if where == "query" else r
    bad.view(-1)[: len(values)] = torch.tensor(values, dtype=torch.float64)
    q, r = q.to(dtype), r.to(dtype)
    labels_q, labels_r = torch.tensor([0, 1, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0])
    if torch.isfinite(q).all() and torch.isfinite(r).all():
        out = retrieval_metrics(q, labels_q, r, labels_r, ks=(1,), backend="torch")
        assert out["lone_queries"] == 0
    else:
        with pytest.raises(ValueError, match=f"{where} contains NaN or infinite"):
            retrieval_metrics(q, labels_q, r, labels_r, ks=(1,), backend="torch")


def test_faiss_on_cuda_without_a_gpu_faiss_is_one_clear_error(monkeypatch):
    # Refused before any tensor moves to the device, so this runs on a machine without CUDA too.
    import faiss

    from pmlbal.metrics.retrieval import TorchKNN, _pick_backend

    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)  # pip's faiss-cpu
    x, y = data("clustered", n=20)
    with pytest.raises(ValueError, match="needs a GPU build of faiss.*backend='torch'") as err:
        retrieval_metrics(x, y, ks=(1,), backend="faiss", device="cuda")
    assert "\n" not in str(err.value) and "'cuda'" in str(err.value)
    with pytest.raises(ValueError, match="GPU build of faiss"):
        TorchKNN(backend="faiss", device="cuda:1")(x, 1, x, True)
    assert _pick_backend("auto", torch.device("cuda")) == "torch"  # the default never asks for it
    assert _pick_backend("faiss", torch.device("cpu")) == "faiss"
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)  # a GPU build
    assert _pick_backend("faiss", torch.device("cuda")) == "faiss"
