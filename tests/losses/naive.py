"""Slow, obviously-correct loops for the supervised forms in docs/method.md, the losses' sections (one embedding set).

Each takes embeddings and labels and returns the reduced loss as the pmlbal loss with the
same arguments and its default reducer does, including docs/method.md's rules ("Conventions") for batches a term
cannot use: no positive or no negative pair gives 0 (NT-Xent, SupCon, alpha-CL: PML's
zero loss), an anchor with no positive / no negative adds 0 to the term that needs it.
"""

import torch
import torch.nn.functional as F


def _cos(x):
    z = F.normalize(x, dim=1)
    return z @ z.T


def _split(labels, i):
    n = len(labels)
    pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
    neg = [j for j in range(n) if labels[j] != labels[i]]
    return pos, neg


def _zero(x):
    return (x * 0).sum()  # keeps the graph, so a gradient of exactly 0 can be compared


def ntxent(emb, labels, temperature, balance=1.0, negatives="sum", decoupled=False):
    s, terms = _cos(emb), []
    for i in range(len(labels)):
        pos, neg = _split(labels, i)
        for p in pos if neg else []:
            w = 1.0 / len(neg) if negatives == "mean" else 1.0
            neg_sum = w * sum(torch.exp(s[i, n] / temperature) for n in neg)
            inside = neg_sum if decoupled else torch.exp(s[i, p] / temperature) + neg_sum
            terms.append(-s[i, p] / temperature + balance * torch.log(inside))
    return torch.stack(terms).mean() if terms else _zero(emb)


def supcon(emb, labels, temperature, balance=1.0):
    s, per_anchor = _cos(emb) / temperature, []
    has_neg = any(_split(labels, i)[1] for i in range(len(labels)))
    for i in range(len(labels)):
        pos, _ = _split(labels, i)
        if pos and has_neg:
            others = [j for j in range(len(labels)) if j != i]
            per_anchor.append(-s[i, pos].mean() + balance * torch.logsumexp(s[i, others], 0))
    kept = [x for x in per_anchor if x.item() != 0]  # default reducer: mean of the non-zero anchors
    return torch.stack(kept).mean() if kept else _zero(emb)


def contrastive(emb, labels, pos_margin, neg_margin, balance=1.0, aggregation="nonzero"):
    z = F.normalize(emb, dim=1)
    pos_l, neg_l = [], []
    for i in range(len(labels)):
        pos, neg = _split(labels, i)
        pos_l += [torch.relu(torch.linalg.vector_norm(z[i] - z[p]) - pos_margin) for p in pos]
        neg_l += [torch.relu(neg_margin - torch.linalg.vector_norm(z[i] - z[n])) for n in neg]
    if len(pos_l) <= 1 and len(neg_l) <= 1:
        return _zero(emb)  # PML's GenericPairLoss: nothing to learn from
    pos_l = torch.stack(pos_l) if pos_l else emb.new_zeros(0)
    neg_l = torch.stack(neg_l) if neg_l else emb.new_zeros(0)
    if aggregation == "pooled":
        return (pos_l.sum() + balance * neg_l.sum()) / (len(pos_l) + len(neg_l))
    if aggregation == "nonzero":
        pos_l, neg_l = pos_l[pos_l > 0], neg_l[neg_l > 0]
    mean = lambda x: x.mean() if len(x) else _zero(emb)  # noqa: E731
    return mean(pos_l) + balance * mean(neg_l)


def dhel(emb, labels, temperature, balance=1.0):
    s, per_anchor = _cos(emb) / temperature, []
    for i in range(len(labels)):
        pos, neg = _split(labels, i)
        align = -s[i, pos].mean() if pos else _zero(emb)
        unif = torch.logsumexp(s[i, neg], 0) if neg else _zero(emb)
        per_anchor.append(align + balance * unif)
    return torch.stack(per_anchor).mean()


def kcl(emb, labels, kernel="gaussian", t=2.0, balance=16.0):
    z = F.normalize(emb, dim=1)

    def d2(i, j):
        return ((z[i] - z[j]) ** 2).sum()

    if kernel == "gaussian":
        k_align = k_energy = lambda i, j: torch.exp(-t * d2(i, j))  # noqa: E731
    else:
        k_align = lambda i, j: -torch.log(t * d2(i, j) + 1)  # noqa: E731
        k_energy = lambda i, j: -0.5 * torch.log(t * d2(i, j) + 1)  # noqa: E731
    per_anchor = []
    for i in range(len(labels)):
        pos, neg = _split(labels, i)
        align = -2 * torch.stack([k_align(i, p) for p in pos]).mean() if pos else _zero(emb)
        energy = torch.stack([k_energy(i, n) for n in neg]).mean() if neg else _zero(emb)
        per_anchor.append(align + balance * energy)
    return torch.stack(per_anchor).mean()


def simplex_weights(x, tau):
    """[mu - x_j]_+ / tau with sum_j [mu - x_j]_+ = tau, mu found by bisection."""
    lo, hi = float(x.min()) - 1, float(x.max()) + tau + 1
    for _ in range(200):
        mu = (lo + hi) / 2
        lo, hi = (mu, hi) if float(torch.relu(mu - x).sum()) < tau else (lo, mu)
    return torch.relu(mu - x) / tau


def alpha_cl(emb, labels, weighting="exp", temperature=0.5, exponent=1.0, eps=0.1, inverse_power=1.0, balance=1.0):
    s, terms = _cos(emb), []
    for i in range(len(labels)):
        pos, neg = _split(labels, i)
        for p in pos if neg else []:
            x = (1 - s[i, neg]).detach().clamp(min=0) ** exponent
            if weighting == "exp":
                w = torch.exp(-x / temperature)
            elif weighting == "inverse":
                w = (x + temperature) ** (-inverse_power)
            else:
                w = simplex_weights(x, temperature)
            alpha = w / (w.sum() + eps * len(neg))
            terms.append(balance * (alpha * s[i, neg]).sum() - alpha.sum() * s[i, p])
    return torch.stack(terms).mean() if terms else _zero(emb)


def dhel_two_view(za, zb, temperature, balance=1.0, include_positive_view=True):
    """docs/method.md, 'DHEL and KCL''s two-view DHEL: pair i is (za_i, zb_i), uniformity within each view."""
    a, b = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    total = 0.0
    for i in range(len(a)):
        others = [j for j in range(len(a)) if j != i]
        unif = torch.logsumexp(a[i] @ a[others].T / temperature, 0)
        if include_positive_view:
            unif = unif + torch.logsumexp(b[i] @ b[others].T / temperature, 0)
        total = total - (a[i] @ b[i]) / temperature + balance * unif
    return total / len(a)
