"""Shared test data builders."""

import subprocess
import sys

import torch


def clustered(n_classes: int, per_class: int, dim: int, dtype=torch.float64, spread: float = 0.6, seed: int = 0):
    """Embeddings with class structure (so losses are neither saturated nor trivial)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g, dtype=dtype)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    emb = centres[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=dtype)
    perm = torch.randperm(len(labels), generator=g)
    return emb[perm].clone().requires_grad_(True), labels[perm]


def serial_search(dims, value, budget=None, seed=0):
    """The (point, run) pairs the search runs when every probe is answered at once, and its final decision."""
    from pmlbal.tune import CoordinateDescent, Result, point_key

    cd, results = CoordinateDescent(dims, budget=budget, seed=seed), []
    while (d := cd.ask(results)).action == "probe":
        for p, run in zip(d.probes, d.runs):
            results.append(Result(p, run, value(p)))
    return {(point_key(r.point, dims), r.run) for r in results}, d


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
