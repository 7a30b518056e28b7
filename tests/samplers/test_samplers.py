from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import samplers as pml_samplers

import pmlbal
from pmlbal.samplers import OSGDBatchSampler, SpectralBatchSampler
from pmlbal.samplers.osgd import batch_infonce


def views(n=480, d=16, clusters=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g) * 2
    c = torch.arange(n) % clusters
    u = centres[c] + 0.7 * torch.randn(n, d, generator=g)
    v = u + 0.3 * torch.randn(n, d, generator=g)
    return u, v


def mean_batch_loss(batches, u, v, tau=0.1):
    s = 1 / np.sqrt(tau)
    uu, vv = F.normalize(u, dim=1) * s, F.normalize(v, dim=1) * s
    idx = torch.tensor(np.array([b for b in batches]))
    return float(batch_infonce(uu[idx], vv[idx]).mean())


def test_self_supervised_batches_exact_and_once_per_epoch():
    u, v = views(n=500)
    sampler = SpectralBatchSampler(batch_size=16, k=6, num_samples=500, seed=3)
    sampler.update(u, v)
    batches = list(sampler)
    assert all(len(b) == 16 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 500 - 500 % (6 * 16)  # remainder of a k*B chunk dropped
    left_out = set(range(500)) - set(flat)
    sampler.update(u, v)
    assert set(range(500)) - {i for b in sampler for i in b} != left_out  # the dropped ones rotate


def test_same_seed_same_batches():
    u, v = views()
    a, b = (SpectralBatchSampler(batch_size=16, k=5, num_samples=480, seed=1) for _ in range(2))
    assert list(a) == list(b)
    a.update(u, v)
    b.update(u, v)
    assert list(a) == list(b)


def test_spectral_batches_have_higher_loss_than_random():
    u, v = views()
    sampler = SpectralBatchSampler(batch_size=16, k=10, num_samples=480, seed=0)
    random_loss = mean_batch_loss(list(sampler), u, v)
    sampler.update(u, v)
    assert mean_batch_loss(list(sampler), u, v) > random_loss + 0.3


def test_labelled_mode_groups_confusable_classes():
    u, _ = views(n=640, clusters=8)
    # 32 classes: each of the 8 clusters holds 4 classes that are hard to tell apart
    labels = (torch.arange(640) % 32).numpy()
    centre_of_class = torch.randn(8, 16) * 3
    emb = centre_of_class[torch.from_numpy(labels % 8)] + 0.3 * torch.randn(640, 16)
    sampler = SpectralBatchSampler(labels, batch_size=16, samples_per_class=4, k=8, seed=0)
    sampler.update(emb)
    batches = list(sampler)
    assert len(batches) == 640 // 16
    for b in batches:
        classes, counts = np.unique(labels[b], return_counts=True)
        assert len(b) == 16 and len(classes) == 4 and (counts == 4).all()
    same_cluster = np.mean([len(np.unique(labels[b] % 8)) == 1 for b in batches])
    assert same_cluster > 0.8  # batches gather classes of one confusable cluster


def group_cycles(batches, labels, n_groups):
    """The epoch's batches as their class sets, cut into consecutive cycles of n_groups batches."""
    keys = [frozenset(np.unique(labels[b]).tolist()) for b in batches]
    return [keys[i : i + n_groups] for i in range(0, len(keys), n_groups)]


def test_labelled_mode_shuffles_the_groups_every_cycle():
    # 32 classes in 8 groups of P=4; an epoch of 40 batches cycles 5 times through the groups. Each
    # cycle visits every group once, in a fresh order: never one fixed, periodic batch sequence.
    labels = np.arange(640) % 32
    g = torch.Generator().manual_seed(1)
    centre_of_class = torch.randn(8, 16, generator=g) * 3
    emb = centre_of_class[torch.from_numpy(labels % 8)] + 0.3 * torch.randn(640, 16, generator=g)
    sampler = SpectralBatchSampler(labels, batch_size=16, samples_per_class=4, k=8, seed=0)
    for step in ("random batches", "after update"):
        if step == "after update":
            sampler.update(emb)
        cycles = group_cycles(list(sampler), labels, 8)
        assert len(cycles) == 5 and all(len(c) == 8 for c in cycles), step
        groups = set(cycles[0])
        assert len(groups) == 8 and sorted(c for g in groups for c in g) == list(range(32)), step
        assert all(set(c) == groups for c in cycles), step  # every group once per cycle
        assert len({tuple(c) for c in cycles}) == 5, step  # five different orders


def test_self_supervised_batch_order_mixes_the_chunks(monkeypatch):
    # 480 samples in chunks of k*B = 96 give 5 chunks of 6 batches. The epoch must not run chunk by
    # chunk (batches of one chunk are mutually similar): the batches of all chunks are shuffled.
    import pmlbal.samplers.spectral as spectral

    u, v = views(n=480)
    chunks, real = [], spectral.spectral_groups

    def spy(uc, vc, group_size, n_groups, seed):  # record which samples each chunk holds
        chunks.append((F.normalize(uc.float(), dim=1) @ F.normalize(u, dim=1).T).argmax(dim=1).tolist())
        return real(uc, vc, group_size, n_groups, seed)

    monkeypatch.setattr(spectral, "spectral_groups", spy)
    sampler = SpectralBatchSampler(batch_size=16, k=6, num_samples=480, seed=0)
    sampler.update(u, v)
    batches = list(sampler)
    chunk_of = {i: c for c, rows in enumerate(chunks) for i in rows}
    assert len(chunks) == 5 and all(len(rows) == 96 for rows in chunks) and len(chunk_of) == 480
    seq = []
    for b in batches:
        (c,) = {chunk_of[i] for i in b}  # a batch is one cluster of one chunk
        seq.append(c)
    assert sorted(Counter(seq).values()) == [6] * 5
    changes = sum(a != b for a, b in zip(seq, seq[1:]))
    assert changes >= 15, seq  # chunk by chunk would change 4 times; a shuffle about 24


def test_osgd_keeps_high_loss_batches():
    u, v = views()
    sampler = OSGDBatchSampler(480, batch_size=16, pool=10, top_q=3, seed=0)
    random_loss = mean_batch_loss(list(sampler), u, v)
    sampler.update(u, v)
    batches = list(sampler)
    assert len(batches) == 9 and all(len(b) == 16 for b in batches)
    assert mean_batch_loss(batches, u, v) > random_loss


def test_registered_in_pml():
    assert pml_samplers.SpectralBatchSampler is SpectralBatchSampler
    assert {"SpectralBatchSampler", "OSGDBatchSampler"} <= set(pmlbal.list_samplers())


@pytest.mark.parametrize(
    "ctor, word",
    [
        (lambda: SpectralBatchSampler(np.arange(40) % 5, batch_size=10, samples_per_class=4), "multiple"),
        (lambda: SpectralBatchSampler(np.arange(40) % 2, batch_size=12, samples_per_class=4), "classes"),
        (lambda: SpectralBatchSampler(batch_size=8), "num_samples"),
        (lambda: SpectralBatchSampler(batch_size=8, num_samples=40, temperature=0), "temperature"),
        (lambda: OSGDBatchSampler(40, batch_size=8, pool=4, top_q=5), "top_q"),
    ],
)
def test_bad_arguments(ctor, word):
    with pytest.raises(ValueError, match=word):
        ctor()


def test_update_checks_shapes():
    sampler = SpectralBatchSampler(batch_size=8, num_samples=40)
    with pytest.raises(ValueError, match="second view"):
        sampler.update(torch.randn(40, 4))
    with pytest.raises(ValueError, match="40 samples"):
        sampler.update(torch.randn(30, 4), torch.randn(30, 4))


# -- OSGD for labelled training (`--sampler osgd`) ---------------------------------------------------
def naive_supcon(z, labels):
    """Per batch, the mean over anchors with a positive of -mean_p s_ip + log sum_{j != i} e^{s_ij}, by loops."""
    out = []
    for zb, yb in zip(z, labels):
        terms = []
        for i in range(len(yb)):
            pos = [p for p in range(len(yb)) if p != i and yb[p] == yb[i]]
            if not pos:
                continue
            s = [float(zb[i] @ zb[j]) for j in range(len(yb))]
            den = np.log(sum(np.exp(s[j]) for j in range(len(yb)) if j != i))
            terms.append(den - np.mean([s[p] for p in pos]))
        out.append(np.mean(terms) if terms else 0.0)
    return np.array(out)


def test_batch_supcon_matches_a_loop_and_skips_anchors_without_a_positive():
    from pmlbal.samplers.osgd import batch_supcon

    g = torch.Generator().manual_seed(3)
    z = F.normalize(torch.randn(5, 8, 6, generator=g, dtype=torch.float64), dim=2) * 3
    labels = torch.randint(0, 3, (5, 8), generator=g)
    labels[0] = torch.arange(8)  # no anchor has a positive: the batch scores 0
    np.testing.assert_allclose(batch_supcon(z, labels).numpy(), naive_supcon(z, labels), rtol=1e-10)


def test_osgd_batches_keep_an_epochs_steps_of_the_hardest_class_balanced_batches():
    from pmlbal.samplers import OSGDBatches
    from pmlbal.samplers.batches import MPerClassBatches
    from pmlbal.samplers.osgd import batch_supcon

    labels = np.repeat(np.arange(24), 20)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(24, 8, generator=g)
    centres[:6] = centres[0] + 0.05 * torch.randn(6, 8, generator=g)  # six confusable classes
    emb = centres[labels] + 0.3 * torch.randn(len(labels), 8, generator=g)
    calls = []

    def embed():
        calls.append(1)
        return emb

    src = OSGDBatches(labels, 32, 4, seed=1, resample_every=2)
    plain = MPerClassBatches(labels, 32, 4, seed=1)
    for n in (1, 2, 3):
        batches = src.epoch(n, embed)
        assert len(batches) == len(plain.epoch(n, embed)) == len(labels) // 32
        assert all(sorted(Counter(labels[b]).values()) == [4] * 8 for b in batches)
    assert len(calls) == 2  # epochs 1 and 3 re-embed; epoch 2 scores fresh candidates on the old embeddings

    z = F.normalize(emb, dim=1) / np.sqrt(0.1)
    lab = torch.from_numpy(labels)

    def score(bs):
        idx = torch.from_numpy(np.stack(bs))
        return float(batch_supcon(z[idx], lab[idx]).mean())

    assert score(src.epoch(4, embed)) > score(plain.epoch(4, embed)) + 0.1
    again = OSGDBatches(labels, 32, 4, seed=1, resample_every=2)
    again.load_state_dict(src.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(again.epoch(6, embed), src.epoch(6, embed)))


def test_osgd_batches_refuse_a_batch_of_more_classes_than_the_split_has():
    from pmlbal.samplers import OSGDBatches

    with pytest.raises(ValueError, match="8 classes per batch, but the split has 2"):
        OSGDBatches(np.repeat(np.arange(2), 20), 32, 4)


def test_osgd_batches_re_embed_on_epochs_one_plus_every_k():
    from pmlbal.samplers import OSGDBatches

    labels = np.repeat(np.arange(12), 10)
    emb = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0))
    src, embedded = OSGDBatches(labels, 24, 4, seed=0, resample_every=2), []
    for n in range(1, 6):
        src.epoch(n, lambda n=n: embedded.append(n) or emb)
    assert embedded == [1, 3, 5]  # epochs 1, 1 + k, 1 + 2k: not 2 and 4


def test_osgd_batches_pools_mix_the_draws(monkeypatch):
    """The first pool of 40 candidates the source scores spans several of its pool/top_q random draws,
    not one draw's consecutive batches (which would keep 4 of every draw's pools whatever their losses)."""
    import pmlbal.samplers.batches as batches_mod
    import pmlbal.samplers.osgd as osgd_mod
    from pmlbal.samplers import OSGDBatches

    labels = np.repeat(np.arange(40), 10)  # 400 samples, batch 8 of 2 classes x 4: 50 steps an epoch
    real_draw, real_score = batches_mod.class_balanced_batches, osgd_mod.batch_supcon
    draw_of, scored = {}, []

    def tagged(labels_, batch_size, m, seed):
        out = real_draw(labels_, batch_size, m, seed)
        draw_of.update({tuple(b.tolist()): seed % 100 for b in out})  # seed = (seed * 1000 + n) * 100 + j
        return out

    def score(z, lab):  # the embeddings are the identity: each row names its sample
        scored.append([tuple(row.tolist()) for row in z.argmax(dim=2)])
        return real_score(z, lab)

    monkeypatch.setattr(batches_mod, "class_balanced_batches", tagged)
    monkeypatch.setattr(osgd_mod, "batch_supcon", score)
    kept = OSGDBatches(labels, 8, 4, seed=0).epoch(1, lambda: torch.eye(len(labels)))
    assert len(kept) == 50 and len(scored) == 1 and len(scored[0]) == 500  # 10 draws x 50 steps, scored once
    first_pool = {draw_of[c] for c in scored[0][:40]}
    assert len(first_pool) > 3, first_pool


def test_the_self_supervised_osgd_sampler_yields_as_many_batches_as_its_len_before_and_after_update():
    sampler = OSGDBatchSampler(100, batch_size=10, pool=5, top_q=2, seed=0)
    assert len(list(sampler)) == len(sampler) == 10  # the random shuffle before the first update
    g = torch.Generator().manual_seed(0)
    sampler.update(torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g))
    assert len(list(sampler)) == len(sampler) == 4  # the top 2 of each pool of 5
