"""The papers' claims on cjk-glyphs, from the committed records (docs/claims.md): nothing is trained.

Usage:
    python benchmarks/claims.py [--results-dir results] [--figures]

Two tables (Markdown), each with its figure under RESULTS_DIR/ when --figures is given:

- "batches": high-loss mini-batches. BalancedNTXentLoss at the glyph board's best setting, trained with
  each batch source (`--sampler m-per-class | spectral | osgd`, the same number of optimiser steps),
  test MAP@R after every epoch (`--eval-every 1`): mean and sample s.d. over seeds per epoch (what the
  selection costs is `benchmarks/batch_selection.py`'s: the records' times depend on the load); figure `cjk-glyphs_batches.png` (MAP@R against the optimiser step).
- "batch size": DHELLoss, KCLLoss, PML's NTXentLoss and BalancedNTXentLoss with negatives "sum" and
  "mean" at batch sizes 32 to 256: test MAP@R and the effective rank of the test embeddings (the
  dimensional-collapse measure), mean and s.d. over seeds; figure `cjk-glyphs_batch_size.png`.

The make-up of each cell (seeds, CPU of the records) is printed with it, so a missing run shows.
`--docs FILE` also writes each table between `<!-- claims:batches -->` (or `claims:batch-size`) and
`<!-- /claims -->` in FILE (docs/claims.md), so the prose's tables are the records'.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from pmlbal.records import iter_records

DATASET = "cjk-glyphs"
BEST = {"balance": 6.8831488149573685, "temperature": 0.4219158948686158}  # the board's top BalancedNTXentLoss row
SAMPLERS = ("m-per-class", "spectral", "osgd")
BATCH_SIZES = (32, 64, 128, 256)
#: (label, loss, its loss_kwargs as the records hold them)
BATCH_SIZE_LOSSES = (
    ("DHELLoss(balance=4)", "DHELLoss", {"balance": 4.0}),
    ("KCLLoss(balance=64)", "KCLLoss", {"balance": 64.0}),
    ("NTXentLoss(T=0.1) [PML]", "NTXentLoss", {"temperature": 0.1}),
    ("BalancedNTXentLoss(balance=1, sum)", "BalancedNTXentLoss", {"balance": 1.0}),
    ("BalancedNTXentLoss(balance=1, mean)", "BalancedNTXentLoss", {"balance": 1.0, "negatives": "mean"}),
    # Twice the balance of the mean form's own default: the effective balance of the sum form at balance 1
    # (`pmlbal.losses.effective_balance`); run once at two sizes (docs/claims.md says what it shows).
    ("BalancedNTXentLoss(balance=2, mean)", "BalancedNTXentLoss", {"balance": 2.0, "negatives": "mean"}),
)


def _test_runs(records, loss: str, kwargs: dict, **config) -> list[dict]:
    want = {"dataset": DATASET, "eval_split": "test", "epochs": 4, "lr": 0.008, "tuned_by": None, **config}
    return sorted((r for r in records if r["config"]["loss"] == loss and r["config"]["loss_kwargs"] == kwargs
                   and all(r["config"].get(k) == v for k, v in want.items())), key=lambda r: r["seed"])


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _cpus(runs: list[dict]) -> str:
    ids = sorted({(r.get("numerics") or {}).get("cpu", {}).get("id", "no fingerprint") for r in runs})
    return ", ".join(ids)


def batches_table(records) -> tuple[list[str], dict]:
    """The per-epoch table of the batch sources and the series the figure draws."""
    series, lines = {}, ["| sampler | seeds | " + " | ".join(f"epoch {e}" for e in range(5)) + " | CPU |",
                         "|---" * 8 + "|"]
    for name in SAMPLERS:
        runs = _test_runs(records, "BalancedNTXentLoss", BEST, sampler=name, eval_every=1, batch_size=128)
        if not runs:
            lines.append(f"| {name} | 0 |" + " — |" * 6)
            continue
        curves = [[r["initial"]["map_at_r"]] + [e["metrics"]["map_at_r"] for e in r["epochs"]] for r in runs]
        by_epoch = [[100 * c[e] for c in curves] for e in range(5)]
        steps = len(runs[0]["steps"]) // runs[0]["config"]["epochs"]
        series[name] = ([e * steps for e in range(5)], by_epoch)
        lines.append(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | "
                     + " | ".join(_ms(v) for v in by_epoch) + f" | {_cpus(runs)} |")
    return lines, series


def batch_size_table(records) -> tuple[list[str], dict]:
    """MAP@R and effective rank per loss and batch size, and the series the figure draws."""
    series = {}
    lines = ["| loss | " + " | ".join(f"B={b}" for b in BATCH_SIZES) + " | eff. rank "
             + " | ".join(f"B={b}" for b in BATCH_SIZES) + " | seeds | CPU |", "|---" * (2 * len(BATCH_SIZES) + 3) + "|"]
    for label, loss, kwargs in BATCH_SIZE_LOSSES:
        maps, ranks, seeds, runs_all = [], [], [], []
        for b in BATCH_SIZES:
            runs = _test_runs(records, loss, kwargs, sampler="m-per-class", eval_every=0, batch_size=b)
            runs_all += runs
            maps.append([100 * r["final"]["map_at_r"] for r in runs])
            ranks.append([r["final"]["effective_rank"] for r in runs])
            seeds.append(len(runs))
        series[label] = maps
        lines.append(f"| {label} | " + " | ".join(_ms(v) for v in maps) + " | "
                     + " | ".join(_ms(v) for v in ranks) + f" | {'/'.join(map(str, seeds))} | {_cpus(runs_all)} |")
    return lines, series


def batches_figure(series: dict, path: Path) -> None:
    from pmlbal.figures import plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, (steps, by_epoch) in series.items():
        mean = [statistics.mean(v) for v in by_epoch]
        lo, hi = [min(v) for v in by_epoch], [max(v) for v in by_epoch]
        (line,) = ax.plot(steps, mean, marker="o", label=f"{name} ({len(by_epoch[0])} seeds)")
        ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
    _finish(fig, ax, "optimiser step (128 images each)", "batch sources at equal steps (mean, band: min to max "
            "over seeds)", path)


def batch_size_figure(series: dict, path: Path) -> None:
    from pmlbal.figures import plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, maps in series.items():
        xs = [b for b, v in zip(BATCH_SIZES, maps) if v]
        mean = [statistics.mean(v) for v in maps if v]
        sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in maps if v]
        ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    _finish(fig, ax, "batch size (4 samples per class)", "MAP@R against batch size (mean ± s.d. over seeds)", path)


def _finish(fig, ax, xlabel: str, title: str, path: Path) -> None:
    from pmlbal.figures import save_figure

    ax.set_xlabel(xlabel)
    ax.set_ylabel("test MAP@R (%)")
    ax.set_title(f"{DATASET}: {title}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def fill_docs(path: Path, tables: dict[str, list[str]]) -> None:
    """Replace each `<!-- claims:NAME -->` ... `<!-- /claims -->` block of `path` with table NAME."""
    from pmlbal.files import atomic_write_text

    text = path.read_text()
    for name, lines in tables.items():
        pattern = re.compile(rf"(<!-- claims:{re.escape(name)} -->\n).*?(<!-- /claims -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path} has no <!-- claims:{name} --> ... <!-- /claims --> block")
        text = pattern.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text)
    atomic_write_text(path, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--figures", action="store_true", help="also write the two figures under RESULTS_DIR/")
    ap.add_argument("--docs", type=Path, help="also fill this file's <!-- claims:NAME --> blocks")
    args = ap.parse_args()
    records = [r for r in iter_records(args.results_dir) if r.get("config", {}).get("dataset") == DATASET]
    sections = (
        ("batches", batches_table, batches_figure, "_batches.png",
         f"batch sources, BalancedNTXentLoss({json.dumps(BEST)[1:-1]}), batch 128, test MAP@R %"),
        ("batch-size", batch_size_table, batch_size_figure, "_batch_size.png",
         "test MAP@R % and effective rank against batch size (mean ± s.d. over seeds)"),
    )
    tables = {}
    for name, table, figure, suffix, heading in sections:
        tables[name], series = table(records)
        print(f"## {DATASET}: {heading}\n\n" + "\n".join(tables[name]) + "\n")
        if args.figures:
            figure(series, Path(args.results_dir) / f"{DATASET}{suffix}")
    if args.docs:
        fill_docs(args.docs, tables)


if __name__ == "__main__":
    main()
