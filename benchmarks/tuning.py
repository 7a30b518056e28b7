"""Coordinate descent vs grid, random and TPE search on the same objective, over seeds.

Usage:
    python benchmarks/tuning.py [--seeds 10] [--out results/tuning_synthetic.png]

Objectives (synthetic, in "Recall@1 %" units so eps = 0.5 point): a quadratic in log space
over balance x temperature x batch size with a per-seed random optimum and deterministic
noise, and a ridge whose optimum couples balance and temperature. For each seed the grid
(powers of two: 9 x 7 x 4 = 252 points) gives the reference best; each method then runs
with a budget of 25 % of the grid's trials. Prints, per objective, the median over seeds of
the trials needed to come within eps of the grid's best, and of the best value at the budget.
A real objective (digits training runs) is `pmlbal tune --search cd|grid|random|tpe`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from statistics import median

import numpy as np
import optuna

from pmlbal.tune import Dim, run_search
from pmlbal.tune.spaces import grid_values, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0), Dim("batch_size", "log2-int", 8, 64)]
EPS = 0.5


def make_objective(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    ob, ot, obs = rng.uniform(-3, 3), rng.uniform(-5.5, -0.5), rng.uniform(3.2, 5.8)

    def objective(trial):
        v = {d.name: suggest(trial, d) for d in DIMS}
        b, t, bs = math.log2(v["balance"]), math.log2(v["temperature"]), math.log2(v["batch_size"])
        noise = 0.2 * math.sin(13 * b + 7 * t + 3 * bs + seed)
        if kind == "quadratic":
            return 90 - 3 * (b - ob) ** 2 - 2 * (t - ot) ** 2 - 1.5 * (bs - obs) ** 2 + noise
        # ridge: the best temperature moves with the balance
        return 90 - 4 * ((t - ot) - 0.5 * (b - ob)) ** 2 - 0.5 * (b - ob) ** 2 - 1.5 * (bs - obs) ** 2 + noise

    return objective


def trials_to(study, target) -> int | None:
    best = -math.inf
    for i, t in enumerate(study.trials, 1):
        if t.value is not None:
            best = max(best, t.value)
        if best >= target:
            return i
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default="results/tuning_synthetic.png")
    args = ap.parse_args()
    n_grid = math.prod(len(grid_values(d)) for d in DIMS)
    budget = n_grid // 4
    print(f"# grid {n_grid} trials; budget for the others {budget} (25 %); eps {EPS}; {args.seeds} seeds; medians")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("quadratic", "ridge")):
        to_eps = {m: [] for m in ("cd", "random", "tpe")}
        at_budget = {m: [] for m in ("cd", "random", "tpe")}
        gaps = []
        for seed in range(args.seeds):
            obj = make_objective(kind, seed)
            grid = run_search(obj, DIMS, "grid", n_grid, None, "grid", seed)
            target = grid.best_value - EPS
            for m in to_eps:
                st = run_search(obj, DIMS, m, budget, None, m, seed)
                to_eps[m].append(trials_to(st, target) or budget + 1)
                at_budget[m].append(st.best_value)
                if m == "cd":
                    gaps.append(grid.best_value - st.best_value)
        line = [f"{kind:<9}"]
        for m in to_eps:
            reached = sum(x <= budget for x in to_eps[m])
            line.append(f"{m}: {median(to_eps[m]):>5.1f} trials to eps ({reached}/{args.seeds} within budget), "
                        f"best@{budget} {median(at_budget[m]):.2f}")
        print("  ".join(line))
        print(f"{'':<9}  cd's gap to the grid optimum at the budget: median {median(gaps):.2f}, max {max(gaps):.2f}")
        ax.boxplot([at_budget[m] for m in to_eps], tick_labels=list(to_eps))
        ax.set_title(f"{kind}: best value at {budget} trials ({args.seeds} seeds)")
        ax.set_ylabel("objective (Recall@1-like %)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
