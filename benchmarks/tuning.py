"""Tuner comparison at equal budgets (docs/tuner.md): which configuration does each search pick?

Usage:
    python benchmarks/tuning.py [--seeds 50] [--budgets 16,33,66] [--jobs 2]
                                [--objectives digits-replay,digits-gauss,quadratic,quadratic-noisy,ridge,ridge-noisy]
                                [--tables digits=results/tuning_digits_grid.csv,...] [--out results/tuning.png]

Methods, each given the same number of training runs B (one trial = one run):
  cd         docs/tuner.md, search version 3 (`CoordinateDescentSampler(budget=B)`, what `pmlbal tune` runs, x0 = the box's centre);
             pick = the point with the highest mean of its runs (`pmlbal.tune.pick`)
  cd-v1      version 1 (one descent from the centre, stops when converged; reference only);
             pick = its best trial among the first B
  random     Optuna's RandomSampler; pick = highest mean of a point's runs (repeats happen on digits)
  tpe        Optuna's TPESampler; pick = `best_trial` (what an Optuna user reads)
  tpe+conf   TPE for B - B//4 trials, then B//4 re-runs of its top 3 (`pmlbal tune --confirm`); pick as cd

Objectives. digits: 405 real training runs (benchmarks/tuning_table.py: BalancedNTXentLoss,
balance 2^-4..2^4 x temperature 2^-5..2^-1 x batch 16/32/64, 3 seeds each, MAP@R on the
class-disjoint val split, %), searched on the table's own log2 coordinates; fashion-mnist: the same
grid on Fashion-MNIST (`tuning_table.py --dataset fashion-mnist`, results/tuning_fashion-mnist_grid.csv). Two noise models:
"replay", where the k-th run of a point answers with its recorded runs in a per-search shuffled
order (a 4th run cycles back), and "gauss", where a run is the mean of the point's 3 recorded runs
plus independent noise of the table's pooled run-to-run s.d. Synthetic: a quadratic and a coupled
ridge over balance x temperature x batch size (continuous log scales, a per-seed optimum, max 90),
noise-free or with noise of s.d. 2 points per run.

Every pick is scored by its *true* value (digits: the mean of the point's 3 recorded runs;
synthetic: the noise-free function), not by the lucky draw that made it look best. Printed per
objective and budget: median and IQR over seeds, and paired wins/ties/losses of each method
against tpe on the same seed (tie: within 0.01 point); then the regret to the best point (median,
mean) and the share of seeds whose pick is within 1 point of the best.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna

from pmlbal.tune import CoordinateDescentSampler, Dim, pick
from pmlbal.tune.optuna import RUN
from pmlbal.tune.policy import confirm_round
from pmlbal.tune.spaces import suggest

optuna.logging.set_verbosity(optuna.logging.ERROR)
METHODS = ("cd", "cd-v1", "random", "tpe", "tpe+conf")
#: Objectives replayed from a recorded grid (data set -> its table) and the synthetic ones.
TABLES = {"digits": "results/tuning_digits_grid.csv", "fashion-mnist": "results/tuning_fashion-mnist_grid.csv",
          "cjk-glyphs": "results/tuning_cjk-glyphs_grid.csv"}
OBJECTIVES = ("digits-replay", "digits-gauss", "fashion-mnist-replay", "fashion-mnist-gauss", "cjk-glyphs-gauss",
              "quadratic", "quadratic-noisy", "ridge", "ridge-noisy")
DEFAULT_OBJECTIVES = ("digits-replay", "digits-gauss", "quadratic", "quadratic-noisy", "ridge", "ridge-noisy")
SYNTH_DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0), Dim("batch_size", "log2-int", 8, 64)]
GRID_DIMS = [Dim("balance_exp", "int", -4, 4), Dim("temperature_exp", "int", -5, -1), Dim("batch_exp", "int", 4, 6)]
#: The glyph lattice (benchmarks/tuning_table.py): one run a point, two at the best 12, so only the "gauss"
#: model makes sense; cd starts from the line-up default (balance 2, T 1/16, batch 128) with the tuner's
#: acceptance threshold (half the paired noise, 1.56 points), as `pmlbal tune` does on cjk-glyphs.
GLYPH_DIMS = [Dim("balance_exp", "int", -1, 3), Dim("temperature_exp", "int", -5, -1), Dim("batch_exp", "int", 6, 8)]
GLYPH_X0 = {"balance_exp": 1, "temperature_exp": -4, "batch_exp": 7}
GLYPH_TOL = 0.5 * 1.56
GRID_POINTS = {"digits": 135, "fashion-mnist": 135, "cjk-glyphs": 75}
SYNTH_NOISE = 2.0
TIE = 0.01
WITHIN = 1.0  # points of MAP@R: "within 1 point of the best"


def table_of(kind: str) -> str | None:
    """The data set whose recorded grid objective `kind` replays (None: synthetic)."""
    for name in TABLES:
        if kind.startswith(name + "-"):
            return name
    return None


def load_table(path: str, points: int = 135) -> dict[tuple[int, int, int], list[float]]:
    """(balance_exp, temperature_exp, batch_exp) -> MAP@R of each recorded run, in %."""
    table: dict[tuple, list[float]] = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            key = (int(row["balance_exp"]), int(row["temperature_exp"]), int(row["batch_exp"]))
            table[key].append(100 * float(row["map_at_r"]))
    n = {len(v) for v in table.values()}
    if len(table) != points or (points == 135 and len(n) != 1):
        raise ValueError(f"{path}: expected {points} points (135: with the same number of runs), got {len(table)} "
                         f"points, runs {n}")
    return dict(table)


class Objective:
    """One search's objective: a run of point p answers with a noisy draw; `truth(p)` scores a pick.

    The k-th run of a point (k counted per search, whatever the method) is a pure function of
    (search seed, point, k), so every method sees the same draws for the same runs."""

    def __init__(self, kind: str, seed: int, table=None) -> None:
        self.kind, self.seed, self.table = kind, seed, table
        self.glyphs = kind.startswith("cjk-glyphs")
        self.dims = (GLYPH_DIMS if self.glyphs else GRID_DIMS) if table is not None else SYNTH_DIMS
        self.count: dict[tuple, int] = defaultdict(int)
        rng = np.random.default_rng([seed, 11])
        self.opt = (rng.uniform(-3, 3), rng.uniform(-5.5, -0.5), rng.uniform(3.2, 5.8))
        if table is not None:
            several = [v for v in table.values() if len(v) > 1]
            self.sd = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in several])))

    def key(self, p) -> tuple:
        return tuple(round(float(p[d.name]), 9) for d in self.dims)

    def truth(self, p) -> float:
        if self.table is not None:
            return float(np.mean(self.table[tuple(int(p[d.name]) for d in self.dims)]))
        b, t, bs = (math.log2(p["balance"]) - self.opt[0], math.log2(p["temperature"]) - self.opt[1],
                    math.log2(p["batch_size"]) - self.opt[2])
        if self.kind.startswith("quadratic"):
            return 90 - 3 * b**2 - 2 * t**2 - 1.5 * bs**2
        return 90 - 4 * (t - 0.5 * b) ** 2 - 0.5 * b**2 - 1.5 * bs**2

    def draw(self, p, k: int) -> float:
        key = self.key(p)
        rng = np.random.default_rng([self.seed, k, *[abs(hash(v)) % 2**31 for v in key]])
        if self.kind.endswith("-replay"):
            runs = self.table[tuple(int(v) for v in key)]
            order = np.random.default_rng([self.seed, 7, *[abs(hash(v)) % 2**31 for v in key]]).permutation(len(runs))
            return runs[order[k % len(runs)]]
        if self.kind.endswith("-gauss"):
            return self.truth(p) + self.sd * rng.standard_normal()
        return self.truth(p) + (SYNTH_NOISE * rng.standard_normal() if self.kind.endswith("noisy") else 0.0)

    def __call__(self, trial: optuna.Trial) -> float:
        p = {d.name: suggest(trial, d) for d in self.dims}
        k = self.count[self.key(p)]
        self.count[self.key(p)] += 1
        return self.draw(p, k)


def mean_pick(trials) -> dict:
    """The pick rule of docs/tuner.md ("Ranking and the pick") over `trials`: the params with the highest mean value."""
    groups: dict[tuple, list] = defaultdict(list)
    for t in trials:
        if t.value is not None:
            groups[tuple(sorted(t.params.items()))].append(t.value)
    best = max(groups, key=lambda k: (np.mean(groups[k]), len(groups[k])))
    return dict(best)


def one_search(args) -> dict:
    """Every method at every budget on one (objective, seed); the true value of each pick."""
    kind, seed, budgets, table = args
    out: dict[tuple[str, int], float] = {}
    make = lambda: Objective(kind, seed, table)  # noqa: E731 - a fresh run counter per search
    for b in budgets:  # cd: the budget shapes the search
        obj = make()
        extra = dict(x0=GLYPH_X0, tol=GLYPH_TOL, noise=1.56) if obj.glyphs else {}
        study = optuna.create_study(direction="maximize",
                                    sampler=CoordinateDescentSampler(b, seed, search_space=obj.dims, **extra))
        study.optimize(obj, n_trials=b)
        out[("cd", b)] = obj.truth(pick(study).params)
    top = max(budgets)
    for method, sampler in (("cd-v1", CoordinateDescentSampler(None, seed, search_space=make().dims)),
                            ("random", optuna.samplers.RandomSampler(seed)), ("tpe", optuna.samplers.TPESampler(seed=seed))):
        obj = make()
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(obj, n_trials=top)  # the pick after b trials = a search with budget b
        trials = sorted(study.trials, key=lambda t: t.number)
        for b in budgets:
            first = trials[:b]
            if method == "random":
                params = mean_pick(first)
            else:
                params = max((t for t in first if t.value is not None), key=lambda t: t.value).params
            out[(method, b)] = obj.truth(params)
        if method == "tpe":
            tpe_trials = trials
    for b in budgets:  # TPE's first b - b//4 trials are those of the long run (same seed), then confirm
        obj = make()
        study = optuna.create_study(direction="maximize")
        for t in tpe_trials[: b - b // 4]:
            study.add_trial(t)
            obj.count[obj.key(t.params)] += 1
        while len(study.trials) < b:
            nxt = confirm_round(study.get_trials(deepcopy=False), obj.dims, b)
            if not nxt:
                break
            for point, run in nxt:
                study.enqueue_trial(point, user_attrs={RUN: run})
                study.optimize(obj, n_trials=1)
        out[("tpe+conf", b)] = obj.truth(mean_pick(study.trials))
    return {"kind": kind, "seed": seed, "picks": out}


def print_table(title: str, budgets: list[int], cell) -> None:
    """A markdown table: one row per method, one column per budget, `cell(method, budget)` in each."""
    print(f"\n## {title}")
    print("| method | " + " | ".join(f"B = {b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for m in METHODS:
        print(f"| {m} | " + " | ".join(cell(m, b) for b in budgets) + " |")


def report(kind: str, rows: list[dict], budgets: list[int], best: float) -> dict:
    """Print the pick's true value, its regret to the best point and how often it lands within
    WITHIN points of the best, per method and budget; return the plot's (median, q1, q3) cells."""
    summary = {}

    def value(m: str, b: int) -> str:
        v = np.array([r[(m, b)] for r in rows])
        ref = np.array([r[("tpe", b)] for r in rows])
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        summary[(kind, m, b)] = (med, q1, q3)
        wtl = "" if m == "tpe" else (f" {int(np.sum(v > ref + TIE))}/{int(np.sum(abs(v - ref) <= TIE))}/"
                                     f"{int(np.sum(v < ref - TIE))}")
        return f"{med:.2f} [{q1:.2f}, {q3:.2f}]{wtl}"

    def regret(m: str, b: int) -> str:
        r = best - np.array([row[(m, b)] for row in rows])
        return f"{np.median(r):.2f}, {r.mean():.2f}; {np.mean(r <= WITHIN + 1e-9):.0%}"

    print_table(f"{kind}: true value of the pick (median [IQR] over {len(rows)} seeds; W/T/L vs tpe, paired)",
                budgets, value)
    print_table(f"{kind}: regret to the best point ({best:.2f}): median, mean; share of seeds within {WITHIN:g} point",
                budgets, regret)
    return summary


def plot(kinds: list[str], summary: dict, budgets: list[int], seeds: int, out: str) -> None:
    """Median and IQR of each method's pick against the budget, one panel per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(kinds))
    rows_n = math.ceil(len(kinds) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.8 * rows_n), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        for i, m in enumerate(METHODS):
            x = np.array(budgets, dtype=float) * (1 + 0.025 * (i - 2))  # side by side
            med, q1, q3 = (np.array([summary[(kind, m, b)][j] for b in budgets]) for j in range(3))
            ax.errorbar(x, med, yerr=[med - q1, q3 - med], marker="o", ms=4, capsize=3, label=m, lw=1.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("budget (training runs)")
        ax.set_ylabel("true value of the pick" + (" (MAP@R %)" if table_of(kind) else ""))
        ax.set_title(kind, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(METHODS), fontsize=9, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Tuners at equal budgets: median and IQR over {seeds} seeds", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES))
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budgets", default="16,33,66")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tables", default="", help="DATASET=CSV,... overriding " + ", ".join(f"{k}={v}" for k, v in TABLES.items()))
    ap.add_argument("--out", default="results/tuning.png")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.objectives.split(",") if k.strip()]
    unknown = set(kinds) - set(OBJECTIVES)
    if unknown:
        raise SystemExit(f"unknown objective(s) {sorted(unknown)}; choose from {', '.join(OBJECTIVES)}")
    budgets = [int(b) for b in args.budgets.split(",")]
    paths = dict(TABLES, **dict(item.split("=", 1) for item in args.tables.split(",") if item))
    tables = {name: load_table(paths[name], GRID_POINTS[name]) for name in {table_of(k) for k in kinds} if name}
    tasks = [(k, s, budgets, tables.get(table_of(k))) for k in kinds for s in range(args.seeds)]
    t0 = time.time()
    with mp.get_context("fork").Pool(args.jobs) as pool:
        done = pool.map(one_search, tasks, chunksize=1)
    print(f"# {len(tasks)} searches x {len(METHODS)} methods in {time.time() - t0:.0f}s "
          f"(seeds 0..{args.seeds - 1}, budgets {budgets})")
    for name, table in tables.items():
        best = max(np.mean(v) for v in table.values())
        print(f"# {name}: best point's true MAP@R {best:.2f}; run-to-run s.d. "
              f"{Objective(name + '-gauss', 0, table).sd:.2f} points")
    summary = {}
    for kind in kinds:
        rows = [d["picks"] for d in done if d["kind"] == kind]
        table = tables.get(table_of(kind))
        best = max(np.mean(v) for v in table.values()) if table is not None else 90.0
        summary.update(report(kind, rows, budgets, best))
    plot(kinds, summary, budgets, args.seeds, args.out)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
