"""Cho et al.'s synthetic setting: which batches make SGD on a contrastive loss converge fastest?

Usage:
    python benchmarks/minibatch_synthetic.py [--n 128] [--batch-size 16] [--seeds 5] [--epochs 30]
    python benchmarks/minibatch_synthetic.py --cost 60000     # time to build batches for N items

Free embeddings: N pairs of unit vectors (u_i, v_i) in d = 2N and d = N/2 dimensions,
trained by SGD on the mini-batch symmetric InfoNCE (temperature 0.1) and renormalised
after each step. Batches: random, OSGD (top-q of pools of random batches) or spectral
clustering (SpectralBatchSampler), rebuilt each epoch. The full-batch loss is recorded
after every step and averaged over seeds; the script prints the steps each method needs
to reach the loss random batches end at, and saves results/minibatch_synthetic.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pmlbal.samplers import OSGDBatchSampler, SpectralBatchSampler
from pmlbal.samplers.osgd import batch_infonce

TAU = 0.1


def full_loss(u, v) -> float:
    s = 1 / np.sqrt(TAU)
    return float(batch_infonce(F.normalize(u, dim=1)[None] * s, F.normalize(v, dim=1)[None] * s)[0])


def run(method: str, n: int, d: int, b: int, epochs: int, seed: int, lr: float) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(True)
    v = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(True)
    if method == "spectral":
        sampler = SpectralBatchSampler(batch_size=b, k=n // b, num_samples=n, temperature=TAU, seed=seed)
    elif method == "osgd":
        sampler = OSGDBatchSampler(n, batch_size=b, pool=n // b, top_q=max(1, n // b // 4), temperature=TAU, seed=seed)
    else:
        sampler = SpectralBatchSampler(batch_size=b, k=n // b, num_samples=n, seed=seed)  # never updated: random
    curve = [full_loss(u.detach(), v.detach())]
    s = 1 / np.sqrt(TAU)
    if method == "osgd":  # it takes top_q of every pool of batches: more epochs for the same number of steps
        epochs = epochs * (n // b) // sampler.top_q
    for epoch in range(epochs):
        if method != "random":
            sampler.update(u.detach(), v.detach())
        else:
            sampler.updates += 1  # a fresh shuffle each epoch
        for batch in sampler:
            idx = torch.tensor(batch)
            loss = batch_infonce(F.normalize(u[idx], dim=1)[None] * s, F.normalize(v[idx], dim=1)[None] * s)[0]
            gu, gv = torch.autograd.grad(loss, (u, v))
            with torch.no_grad():
                u -= lr * gu
                v -= lr * gv
                u.copy_(F.normalize(u, dim=1))
                v.copy_(F.normalize(v, dim=1))
            curve.append(full_loss(u.detach(), v.detach()))
    return curve


def steps_to(curve: np.ndarray, target: float) -> int | None:
    hit = np.flatnonzero(curve <= target)
    return int(hit[0]) if len(hit) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--out", default="results/minibatch_synthetic.png")
    ap.add_argument("--cost", type=int, default=None, help="only time building batches for this many items (k=40, B=32)")
    args = ap.parse_args()

    if args.cost:
        g = torch.Generator().manual_seed(0)
        u = torch.randn(args.cost, 128, generator=g)
        v = u + 0.5 * torch.randn(args.cost, 128, generator=g)
        sampler = SpectralBatchSampler(batch_size=32, k=40, num_samples=args.cost)
        t0 = time.perf_counter()
        sampler.update(u, v)
        dt = time.perf_counter() - t0
        print(f"SpectralBatchSampler.update: {args.cost} items, k=40, B=32 -> {len(sampler)} batches in {dt:.1f} s "
              f"({torch.get_num_threads()} threads)")
        return

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, b = args.n, args.batch_size
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    print(f"# N={n}, B={b}, {args.epochs} epochs, {args.seeds} seeds; steps to reach random batches' final full-batch loss")
    for ax, d in zip(axes, (2 * n, n // 2)):
        curves = {m: np.mean([run(m, n, d, b, args.epochs, s, args.lr) for s in range(args.seeds)], axis=0)
                  for m in ("random", "osgd", "spectral")}
        target = curves["random"][-1]
        line = [f"d={d:<4}"]
        for m, c in curves.items():
            ax.plot(c, label=m)
            line.append(f"{m}: {steps_to(c, target)} steps (final {c[-1]:.3f})")
        print("  ".join(line))
        ax.axhline(target, color="grey", lw=0.5, ls="--")
        ax.set_title(f"N={n}, d={d}, B={b}")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("full-batch loss")
        ax.set_yscale("log")
        ax.legend()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
