"""Coordinate descent vs grid, random and TPE search on the same objectives, over seeds.

Usage:
    python benchmarks/tuning.py [--objectives digits-r1,digits-map,quadratic,ridge] [--seeds 10]
                                [--table results/tuning_digits_grid.csv] [--out results/tuning.png] [--variants]

Real objective (digits-r1, digits-map): digits training runs with BalancedNTXentLoss over
balance (2^-4..2^4) x temperature (2^-5..2^-1) x batch size (16, 32, 64), 135 points, each
trained with 3 seeds by benchmarks/tuning_digits_table.py (train-sub -> class-disjoint val).
Searches replay against that table: for each search seed and point, one of the 3 training
runs is drawn, so a search sees real run-to-run noise; the grid, run on the same draws, gives
the reference best. The searches move on the grid's coordinates (log2 exponents), so cd's
steps are x2 and its minimum step is the grid's spacing. Values are Recall@1 or MAP@R in %.

Synthetic objectives (quadratic, ridge): "Recall@1-like %" functions over balance x
temperature x batch size (powers of two; grid 9 x 7 x 4 = 252), with a per-seed optimum and
deterministic noise; the ridge couples the best temperature to the balance.

Every method other than grid gets 25 % of the grid's trials. Printed per objective, as medians
over seeds: trials to come within eps (0.5 point) of the grid's best, and the best value found
at the budget; for the digits objectives also the value of the configuration each method picked,
averaged over its 3 training runs (what retraining it would give). cd stops by itself once
converged, so a second table gives random and TPE the trials cd actually spent on that seed.

`--variants` adds two changes to SPEC section 5 that are *not* what `pmlbal tune` runs, measured
so the spec's owner can weigh them: "cd-restart" (once converged with budget left, descend again
from a random point, reusing every finished trial) and "cd-wide" (initial steps x4 instead of x2).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from statistics import median

import numpy as np
import optuna

from pmlbal.tune import CoordinateDescent, Dim, point_key, run_search
from pmlbal.tune.spaces import grid_values, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPS = 0.5
METHODS = ("cd", "random", "tpe")
VARIANTS = {"cd-restart": {"restart": True}, "cd-wide": {"wide": True}}  # candidate SPEC changes, see --variants
SYNTH_DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0), Dim("batch_size", "log2-int", 8, 64)]
# digits: the table's own coordinates (log2 exponents), as integer coordinates with unit steps.
DIGITS_DIMS = [Dim("balance_exp", "int", -4, 4), Dim("temperature_exp", "int", -5, -1), Dim("batch_exp", "int", 4, 6)]


def synthetic(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    ob, ot, obs = rng.uniform(-3, 3), rng.uniform(-5.5, -0.5), rng.uniform(3.2, 5.8)

    def objective(trial):
        v = {d.name: suggest(trial, d) for d in SYNTH_DIMS}
        b, t, bs = math.log2(v["balance"]), math.log2(v["temperature"]), math.log2(v["batch_size"])
        noise = 0.2 * math.sin(13 * b + 7 * t + 3 * bs + seed)
        if kind == "quadratic":
            return 90 - 3 * (b - ob) ** 2 - 2 * (t - ot) ** 2 - 1.5 * (bs - obs) ** 2 + noise
        return 90 - 4 * ((t - ot) - 0.5 * (b - ob)) ** 2 - 0.5 * (b - ob) ** 2 - 1.5 * (bs - obs) ** 2 + noise

    return objective, None


def load_table(path: str) -> dict[tuple[int, int, int], dict[str, list[float]]]:
    """(balance_exp, temperature_exp, batch_exp) -> {"recall@1": [per seed], "map_at_r": [...]}, in %."""
    table: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            key = (int(row["balance_exp"]), int(row["temperature_exp"]), int(row["batch_exp"]))
            for m in ("recall@1", "map_at_r"):
                table[key][m].append(100 * float(row[m]))
    n = {len(v["recall@1"]) for v in table.values()}
    if len(table) != 135 or len(n) != 1:
        raise ValueError(f"{path}: expected 135 points with the same number of seeds, got {len(table)} points, seeds {n}")
    return table


def tabular(table, metric: str, seed: int):
    """Each point answers with one of its training runs, drawn per (search seed, point)."""
    rng = np.random.default_rng(seed)
    draws = {key: int(rng.integers(len(v[metric]))) for key, v in sorted(table.items())}

    def objective(trial):
        key = tuple(suggest(trial, d) for d in DIGITS_DIMS)
        return table[key][metric][draws[key]]

    def mean_of(params):
        key = tuple(params[d.name] for d in DIGITS_DIMS)
        return float(np.mean(table[key][metric]))

    return objective, mean_of


def random_point(dims, rng) -> dict:
    """A uniform draw from the box: in log2 units on log scales, whole numbers on integer ones."""
    out = {}
    for d in dims:
        if d.scale == "categorical":
            out[d.name] = d.choices[int(rng.integers(len(d.choices)))]
        elif d.scale in ("log", "log2-int"):
            out[d.name] = d.from_unit(rng.uniform(math.log2(d.low), math.log2(d.high)))
        elif d.scale == "int":
            out[d.name] = int(rng.integers(int(d.low), int(d.high) + 1))
        else:
            out[d.name] = float(rng.uniform(d.low, d.high))
    return out


def cd_variant(objective, dims, budget: int, seed: int, *, restart: bool = False, wide: bool = False) -> optuna.Study:
    """Coordinate descent changed as SPEC section 5 does not say (see --variants), on an in-memory study.

    Drives the same `CoordinateDescent` core as `pmlbal tune`; `wide` starts every step at twice the
    spec's (x4 on log scales) with the spec's minimum steps, `restart` begins a fresh descent from
    a random point whenever one converges with budget left (finished trials answer for themselves).
    """
    if wide:
        dims = [replace(d, step=2 * d.default_step(), min_step=d.default_min_step()) for d in dims]
    study = optuna.create_study(direction="maximize")
    finished: dict[tuple, float] = {}
    rng = np.random.default_rng(seed)
    x0, idle = None, 0
    while len(finished) < budget and idle < 100:
        before = len(finished)
        cd = CoordinateDescent(dims, x0=x0, budget=budget)
        while (decision := cd.ask(finished)).action == "probe":
            for p in decision.probes:
                study.enqueue_trial(p)
                study.optimize(objective, n_trials=1)
                finished[point_key(p, dims)] = study.trials[-1].value
        if not restart:
            break
        idle = idle + 1 if len(finished) == before else 0  # a start whose descent was all cached
        x0 = random_point(dims, rng)
    return study


def trials_to(study, target) -> int | None:
    best = -math.inf
    for i, t in enumerate(sorted(study.trials, key=lambda t: t.number), 1):
        if t.value is not None:
            best = max(best, t.value)
        if best >= target:
            return i
    return None


def best_after(study, n: int):
    """The best of the first `n` trials (by number) that have a value."""
    done = [t for t in sorted(study.trials, key=lambda t: t.number)[:n] if t.value is not None]
    return max(done, key=lambda t: t.value)


def search(m: str, obj, dims, budget: int, seed: int) -> optuna.Study:
    if m in VARIANTS:
        return cd_variant(obj, dims, budget, seed, **VARIANTS[m])
    return run_search(obj, dims, m, budget, None, m, seed)


def compare(name: str, make, dims, seeds: int, methods=METHODS):
    n_grid = math.prod(len(grid_values(d)) for d in dims)
    budget = n_grid // 4
    to_eps = {m: [] for m in methods}
    at_budget = {m: [] for m in methods}
    picked = {m: [] for m in methods}
    # at cd's own trial count on that seed: best value seen, and the pick's retrained value
    matched = {m: [] for m in methods}
    matched_pick = {m: [] for m in methods}
    grid_best, grid_picked = [], []
    checkpoints = sorted({8, 16, budget})
    anytime = {m: {c: [] for c in checkpoints} for m in methods}  # pick retrained after c trials
    used = []
    for seed in range(seeds):
        obj, mean_of = make(seed)
        grid = run_search(obj, dims, "grid", n_grid, None, "grid", seed)
        grid_best.append(grid.best_value)
        if mean_of:
            grid_picked.append(mean_of(grid.best_params))
        for m in methods:  # "cd" comes first: the matched table needs its trial count
            st = search(m, obj, dims, budget, seed)
            to_eps[m].append(trials_to(st, grid.best_value - EPS) or budget + 1)
            at_budget[m].append(st.best_value)
            if m == "cd":
                used.append(len(st.trials))
            at_cd_count = best_after(st, used[-1])
            matched[m].append(at_cd_count.value)
            if mean_of:
                picked[m].append(mean_of(st.best_params))
                matched_pick[m].append(mean_of(at_cd_count.params))
                for c in checkpoints:
                    anytime[m][c].append(mean_of(best_after(st, c).params))
    print(f"\n## {name}: grid {n_grid} trials (median best {median(grid_best):.2f}"
          + (f", its pick retrained {median(grid_picked):.2f}" if grid_picked else "")
          + f"); others {budget} trials (25 %); eps {EPS}; medians over {seeds} seeds")
    print("| method | trials to within eps of the grid's best | reached within budget | best at budget |"
          + (" pick retrained (mean of 3 runs) |" if grid_picked else ""))
    print("|---|---|---|---|" + ("---|" if grid_picked else ""))
    for m in methods:
        reached = sum(x <= budget for x in to_eps[m])
        line = f"| {m} | {median(to_eps[m]):.1f} | {reached}/{seeds} | {median(at_budget[m]):.2f} |"
        if grid_picked:
            line += f" {median(picked[m]):.2f} |"
        print(line)
    if grid_picked:
        print(f"pick retrained after n trials (cd stops by itself once converged; median trials cd used: "
              f"{median(used):.0f}):")
        print("| method | " + " | ".join(f"n = {c}" for c in checkpoints) + " |")
        print("|---|" + "---|" * len(checkpoints))
        for m in methods:
            print(f"| {m} | " + " | ".join(f"{median(anytime[m][c]):.2f}" for c in checkpoints) + " |")
    print(f"at cd's own trial count on each seed (median {median(used):.0f}; the variants get the same count):")
    print("| method | best seen |" + (" pick retrained |" if grid_picked else ""))
    print("|---|---|" + ("---|" if grid_picked else ""))
    for m in methods:
        print(f"| {m} | {median(matched[m]):.2f} |" + (f" {median(matched_pick[m]):.2f} |" if grid_picked else ""))
    gaps = [g - c for g, c in zip(grid_best, at_budget["cd"])]
    print(f"cd's gap to the grid's best at the budget: median {median(gaps):.2f}, max {max(gaps):.2f}; "
          f"cd used {median([min(x, budget) for x in to_eps['cd']]) / n_grid:.0%} of the grid's trials (median) to get within eps")
    return {"name": name, "budget": budget, "at_budget": at_budget, "grid_best": grid_best, "methods": methods,
            "matched": matched, "used": median(used)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", default="digits-r1,digits-map,quadratic,ridge")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--table", default="results/tuning_digits_grid.csv")
    ap.add_argument("--out", default="results/tuning.png")
    ap.add_argument("--variants", action="store_true", help="also run cd-restart and cd-wide (not SPEC section 5)")
    args = ap.parse_args()
    methods = METHODS + tuple(VARIANTS) if args.variants else METHODS
    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    table = load_table(args.table) if any(n.startswith("digits") for n in names) else None
    results = []
    for n in names:
        if n == "digits-r1":
            results.append(compare("digits, Recall@1 (val, %)", lambda s: tabular(table, "recall@1", s), DIGITS_DIMS, args.seeds, methods))
        elif n == "digits-map":
            results.append(compare("digits, MAP@R (val, %)", lambda s: tabular(table, "map_at_r", s), DIGITS_DIMS, args.seeds, methods))
        elif n in ("quadratic", "ridge"):
            results.append(compare(f"synthetic {n}", lambda s, n=n: synthetic(n, s), SYNTH_DIMS, args.seeds, methods))
        else:
            raise SystemExit(f"unknown objective {n!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 7.5), squeeze=False)
    for col, r in enumerate(results):
        for ax, key, title in ((axes[0][col], "at_budget", f"best at {r['budget']} trials"),
                               (axes[1][col], "matched", f"best at cd's own trial count (median {r['used']:.0f})")):
            ax.boxplot([r[key][m] for m in r["methods"]], tick_labels=list(r["methods"]))
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            ax.axhline(median(r["grid_best"]), color="gray", ls="--", lw=1, label="grid best (median)")
            ax.set_title(f"{r['name']}\n{title}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
