"""Replay of tuning searches against a multi-seed lattice of recorded training runs (issue 47).

Usage:
    python benchmarks/replay.py [--lattice results/lattice/cjk-glyphs_BalancedNTXentLoss.csv]
                                [--budgets 8,12,16,24,32,48] [--seeds 200] [--methods cd,tpe,gp,random,sobol]
                                [--min-seeds 3] [--jobs 2] [--out results/replay/cjk-glyphs_BalancedNTXentLoss.csv]
    python benchmarks/replay.py --summary CSV [--docs docs/tuner.md] [--figure PNG]

The objective is the lattice itself (benchmarks/lattice_csv.py: one row per recorded run, validation MAP@R
of BalancedNTXentLoss on cjk-glyphs, balance 2^b x temperature 2^t x batch 2^s): the seed indices
recorded at every point are the replay's seeds. A search seed draws one order of those seed indices,
shared by every point, and the k-th run of a point in that search is the point's recorded run at the
k-th seed index of the order: the seed effect is shared between points, as in a real study, where run k
of every point trains with seed k. A point run more often than it has seeds cycles (the summary counts
such picks). Each pick is scored by its truth, the mean of all the point's recorded runs, and by a
held-out run: the point's recorded run at the first seed index of the order the search did not draw
for it (none when it drew them all).

Arms, each given the same budget of B runs (one trial is one run, the lattice's one fold), the same
start (the lattice point nearest the class's defaults, `--x0`, run first), the same pick rule
(`pmlbal.tune.pick`: the defaults unless a confirmed point beats them on paired runs by more than the
standard error) and the same confirm allowance (the last B // 4 runs re-run the best points and the
defaults: `pmlbal.tune.policy`, what every engine of `pmlbal tune` follows):

  cd      `CoordinateDescentSampler(B)` as `pmlbal tune` runs it (its acceptance threshold and noise floor
          from the data set's registered paired noise), on the lattice's steps (one exponent: x2)
  tpe     Optuna's TPESampler, start-up trials min(10, max(2, B // 3)), as `--search gp` scales its own
  gp      `pmlbal tune --search gp`'s sampler (Optuna's GPSampler, observation noise fitted)
  random  Optuna's RandomSampler
  sobol   Optuna's scrambled Sobol sequence (QMCSampler), then the confirm rounds: an explore phase
          without any model or descent, to isolate what the descent adds

The primary metric, fixed before any run: mean regret (best truth on the lattice minus the pick's truth,
points of MAP@R) per budget with a 95 % bootstrap CI over search seeds; also the share of searches within
1 point of the best, the held-out value, and a paired Wilcoxon test of cd against each arm on the same
search seeds. `--summary` prints the tables, writes them into a `--docs` file between the markers
``<!-- replay:NAME -->`` and ``<!-- /replay:NAME -->`` (NAME: the CSV's stem; tests/test_replay.py checks
that the committed tables are the CSV's) and draws regret against budget with CI bands (`--figure`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import multiprocessing as mp
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from pmlbal.files import atomic_write_text
from pmlbal.registry import dataset_spec
from pmlbal.tune import CoordinateDescentSampler, Dim, pick
from pmlbal.tune.optuna import SPEC
from pmlbal.tune.policy import next_step
from pmlbal.tune.run import make_sampler
from pmlbal.tune.spaces import suggest
from pmlbal.tune.trials import RUN

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # QMC, GP: arms, not news

METHODS = ("cd", "tpe", "gp", "random", "sobol")
BUDGETS = (8, 12, 16, 24, 32, 48)
FIELDS = ("method", "budget", "search_seed", "trials", "pick_point", "pick_runs", "is_default", "pick_value",
          "heldout_value", "best_value", "regret", "cycled")
#: "Within 1 point of the best": MAP@R points.
WITHIN = 1.0
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Lattice:
    """Recorded runs: point (balance, temperature, batch exponents) -> {seed index: MAP@R in [0, 1]},
    restricted to the seed indices every point has; `dims` the search space on the lattice's exponents."""

    runs: dict[tuple[int, int, int], dict[int, float]]
    seeds: tuple[int, ...]
    dims: tuple[Dim, ...]

    def truth(self, p: tuple[int, int, int]) -> float:
        return float(np.mean([self.runs[p][s] for s in self.seeds]))

    @property
    def best(self) -> float:
        return max(self.truth(p) for p in self.runs)

    def nearest(self, balance: float, temperature: float, batch: int) -> dict[str, int]:
        """The lattice point nearest a configuration, in log2 steps (the search's start)."""
        target = (math.log2(balance), math.log2(temperature), math.log2(batch))
        p = min(self.runs, key=lambda q: (sum((a - b) ** 2 for a, b in zip(q, target)), q))
        return dict(zip(NAMES, p))


NAMES = ("balance_exp", "temperature_exp", "batch_exp")


def load_lattice(path: str | Path, min_seeds: int = 3) -> Lattice:
    """Read a lattice CSV (benchmarks/lattice_csv.py); ValueError naming what is missing when fewer than
    `min_seeds` seed indices are recorded at every point."""
    runs: dict[tuple[int, int, int], dict[int, float]] = defaultdict(dict)
    with open(path) as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            key = (round(math.log2(float(row["balance"]))), round(math.log2(float(row["temperature"]))),
                   round(math.log2(float(row["batch_size"]))))
            runs[key][int(row["seed"])] = float(row["map_at_r"])
    if not runs:
        raise ValueError(f"{path}: no runs")
    common = set.intersection(*(set(v) for v in runs.values()))
    if len(common) < min_seeds:
        short = sorted(p for p, v in runs.items() if len(v) < min_seeds)
        raise ValueError(f"{path}: {len(common)} seed indices are recorded at every point, {min_seeds} needed "
                         f"({len(short)} of {len(runs)} points have fewer, e.g. {short[:3]})")
    dims = tuple(Dim(name, "int", min(p[i] for p in runs), max(p[i] for p in runs)) for i, name in enumerate(NAMES))
    full = math.prod(d.high - d.low + 1 for d in dims)
    if len(runs) != full:
        raise ValueError(f"{path}: {len(runs)} points, but the lattice's box holds {full}: the lattice has holes")
    return Lattice(dict(runs), tuple(sorted(common)), dims)


class Replay:
    """One search seed's objective: run k of point p is p's recorded run at seed index `order[k]`."""

    def __init__(self, lattice: Lattice, search_seed: int) -> None:
        self.lattice = lattice
        self.order = [lattice.seeds[i] for i in np.random.default_rng([search_seed, 47]).permutation(len(lattice.seeds))]
        self.count: dict[tuple, int] = defaultdict(int)

    def point(self, params) -> tuple[int, int, int]:
        return tuple(int(params[n]) for n in NAMES)

    def __call__(self, trial: optuna.Trial) -> float:
        p = self.point({d.name: suggest(trial, d) for d in self.lattice.dims})
        k = self.count[p]
        self.count[p] += 1
        return self.lattice.runs[p][self.order[k % len(self.order)]]

    def heldout(self, p: tuple[int, int, int]) -> float:
        k = self.count[p]
        return self.lattice.runs[p][self.order[k]] if k < len(self.order) else float("nan")


def sampler_for(method: str, dims, seed: int, budget: int, x0, noise: float):
    """Each arm's Optuna sampler; cd with the tuner's own settings (x0, tolerance, noise floor)."""
    if method == "cd":
        return CoordinateDescentSampler(budget, seed, search_space=list(dims), x0=x0, tol=0.5 * noise, noise=noise)
    if method == "tpe":
        startup = min(10, max(2, budget // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if method == "gp":
        return make_sampler("gp", list(dims), seed, budget)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "sobol":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def search(lattice: Lattice, method: str, budget: int, search_seed: int, x0: dict, noise: float) -> dict:
    """One search: its pick, scored by truth and held-out run."""
    obj = Replay(lattice, search_seed)
    study = optuna.create_study(direction="maximize", sampler=sampler_for(method, lattice.dims, search_seed, budget,
                                                                           x0, noise))
    study.set_user_attr(SPEC, {"x0": x0, "noise": noise})  # the pick's reference: the same rule for every arm
    if method == "cd":
        study.optimize(obj, n_trials=budget)
    else:
        while (step := next_step(study.get_trials(deepcopy=False), lattice.dims, budget=budget, search=method,
                                 confirm=True, x0=x0, noise=noise)).action != "done":
            for point, run in step.probes:
                study.enqueue_trial(dict(point), user_attrs={RUN: run}, skip_if_exists=False)
            study.optimize(obj, n_trials=step.trials)
    chosen = pick(study)
    p = obj.point(chosen.params)
    value, best = lattice.truth(p), lattice.best
    return {"method": method, "budget": budget, "search_seed": search_seed, "trials": len(study.trials), "pick_point": "b{}_t{}_s{}".format(*p),
            "pick_runs": obj.count[p], "is_default": int(chosen.is_default), "pick_value": round(100 * value, 4),
            "heldout_value": round(100 * obj.heldout(p), 4), "best_value": round(100 * best, 4),
            "regret": round(100 * (best - value), 4), "cycled": int(obj.count[p] > len(lattice.seeds))}


def _one_seed(args) -> list[dict]:
    lattice, methods, budgets, seed, x0, noise = args
    return [search(lattice, m, b, seed, x0, noise) for m in methods for b in budgets]


def run_replay(lattice: Lattice, methods, budgets, seeds: int, x0: dict, noise: float, jobs: int = 1) -> list[dict]:
    work = [(lattice, tuple(methods), tuple(budgets), s, x0, noise) for s in range(seeds)]
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            chunks = pool.map(_one_seed, work, chunksize=1)
    else:
        chunks = [_one_seed(w) for w in work]
    return [row for chunk in chunks for row in chunk]


# -- summary ------------------------------------------------------------------------------------------
def read_rows(path: str | Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def summarise(rows: list[dict]) -> list[dict]:
    """Per (budget, method): mean regret, its 95 % bootstrap CI over search seeds, the share within
    WITHIN points of the best, mean held-out value, and cd's paired difference and Wilcoxon p against it."""
    from scipy.stats import wilcoxon

    by = defaultdict(dict)
    for r in rows:
        by[(int(r["budget"]), r["method"])][int(r["search_seed"])] = r
    out = []
    for (budget, method), cell in sorted(by.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
        seeds = sorted(cell)
        regret = np.array([float(cell[s]["regret"]) for s in seeds])
        rng = np.random.default_rng(0)
        boot = regret[rng.integers(0, len(regret), (BOOTSTRAP, len(regret)))].mean(axis=1)
        held = np.array([float(cell[s]["heldout_value"]) for s in seeds])
        row = {"budget": budget, "method": method, "searches": len(seeds), "mean_regret": regret.mean(),
               "ci_low": float(np.quantile(boot, 0.025)), "ci_high": float(np.quantile(boot, 0.975)),
               "within": float(np.mean(regret <= WITHIN)), "heldout": float(np.nanmean(held)) if np.isfinite(held).any()
               else float("nan"), "cd_minus": float("nan"), "p": float("nan")}
        cd = by.get((budget, "cd"), {})
        paired = [s for s in seeds if s in cd]
        if method != "cd" and paired:
            a = np.array([float(cd[s]["regret"]) for s in paired])
            b = np.array([float(cell[s]["regret"]) for s in paired])
            row["cd_minus"] = float((a - b).mean())
            row["p"] = float(wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
        out.append(row)
    return out


def table_markdown(summary: list[dict]) -> str:
    """The docs table: one row per (budget, method)."""
    lines = ["| budget | method | searches | mean regret (95 % CI) | within 1 point | held-out MAP@R | cd − arm | p (Wilcoxon) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        paired = "" if math.isnan(r["cd_minus"]) else f"{r['cd_minus']:+.2f}"
        p = "" if math.isnan(r["p"]) else f"{r['p']:.3g}"
        lines.append(f"| {r['budget']} | {r['method']} | {r['searches']} | {r['mean_regret']:.2f} "
                     f"({r['ci_low']:.2f}–{r['ci_high']:.2f}) | {100 * r['within']:.0f} % | {r['heldout']:.2f} | "
                     f"{paired} | {p} |")
    return "\n".join(lines) + "\n"


def write_docs(docs: str | Path, name: str, table: str) -> None:
    """Put `table` between the markers of `name` in `docs` (ValueError when the markers are missing)."""
    text = Path(docs).read_text()
    start, end = f"<!-- replay:{name} -->", f"<!-- /replay:{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"{docs} has no '{start}' ... '{end}' block for the replay table")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(Path(docs), f"{head}{start}\n{table}{end}{tail}")


def docs_table(docs: str | Path, name: str) -> str | None:
    """The table committed between `name`'s markers in `docs`, or None."""
    text = Path(docs).read_text()
    start, end = f"<!-- replay:{name} -->", f"<!-- /replay:{name} -->"
    if start not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].lstrip("\n")


def plot(summary: list[dict], out: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pmlbal.files import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in METHODS:
        rows = [r for r in summary if r["method"] == method]
        if not rows:
            continue
        x = [r["budget"] for r in rows]
        ax.plot(x, [r["mean_regret"] for r in rows], marker="o", label=method)
        ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["budget"] for r in summary}), [str(b) for b in sorted({r["budget"] for r in summary})])
    ax.set_xlabel("budget (training runs)")
    ax.set_ylabel("mean regret, MAP@R points (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_rows(rows: list[dict], out: str | Path, command: str) -> None:
    buf = io.StringIO()
    buf.write(f"# {command}\n")
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lattice", default="results/lattice/cjk-glyphs_BalancedNTXentLoss.csv")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--min-seeds", type=int, default=3)
    parser.add_argument("--x0", default="1,0.07,128", help="balance,temperature,batch: the class's defaults")
    parser.add_argument("--dataset", default="cjk-glyphs", help="whose registered paired noise cd uses")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--summary", default=None, help="summarise this replay CSV instead of replaying")
    parser.add_argument("--docs", default=None)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args(argv)
    if args.summary:
        summary = summarise(read_rows(args.summary))
        table = table_markdown(summary)
        print(table, end="")
        if args.docs:
            write_docs(args.docs, Path(args.summary).stem, table)
        if args.figure:
            plot(summary, args.figure, Path(args.summary).stem)
        return
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in METHODS]:
        parser.error(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    lattice = load_lattice(args.lattice, args.min_seeds)
    balance, temperature, batch = (float(v) for v in args.x0.split(","))
    x0 = lattice.nearest(balance, temperature, int(batch))
    noise = float(dataset_spec(args.dataset).val_noise.get("map_at_r", 0.0))
    out = args.out or f"results/replay/{Path(args.lattice).stem}.csv"
    budgets = [int(b) for b in args.budgets.split(",")]
    rows = run_replay(lattice, methods, budgets, args.seeds, x0, noise, args.jobs)
    command = "python benchmarks/replay.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_rows(rows, out, command)
    print(f"{len(rows)} searches on {len(lattice.runs)} points x {len(lattice.seeds)} seeds -> {out}")
    print(table_markdown(summarise(rows)), end="")


if __name__ == "__main__":
    main()
