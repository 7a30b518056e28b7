"""Build a real objective for benchmarks/tuning.py: training runs over a full lattice of one data set.

Usage:
    python benchmarks/tuning_table.py [--dataset digits|fashion-mnist|cjk-glyphs] [--seeds N] [--epochs N]
                                      [--second-seeds K] [--out results/tuning_DATASET_grid.csv]

Every point of a lattice of balance x temperature x batch size (`LATTICES`, one per data set) is trained
with BalancedNTXentLoss on the data set's train-sub split and scored on its class-disjoint validation
split, once per training seed (epochs: the data set's default unless given). digits and Fashion-MNIST:
balance 2^-4..2^4 x temperature 2^-5..2^-1 x batch size 16/32/64, 2 samples a class per batch half,
3 seeds. cjk-glyphs: balance 2^-1..2^3 x temperature 2^-5..2^-1 x batch 64/128/256 around the main
job's default (balance 2, temperature 1/16, batch 128; the data set's 4 samples a class; the class
default, balance 1 at temperature 0.07, is next to balance 1 at 1/16), one seed per point and, with
`--second-seeds 12`, a second seed at the 12 points whose first run scored best. Powers of two, so
that the descent of a study started at the main job's default steps along the lattice. Runs are
ordinary harness runs: their records go to `--runs-dir` (cjk-glyphs: results/, so the records behind
the committed table are committed too) and a re-run skips every recorded point, so an interrupted
build resumes. The table (one row per point and seed, with Recall@1 and MAP@R) is written atomically
once every run is recorded. Searches then replay against the table, so cd, grid, random and TPE are
compared on the very same training outcomes, and each search seed draws its training seed per point
(real run-to-run noise), as a tabular HPO benchmark does.

`--shard K/N` trains only every N-th point starting at K (0-based) and writes no table: N
processes of one thread each fill the grid faster than one process of N threads on a small
model; a last run without --shard finds every record and writes the table. A point another
process is training (its run lock) is skipped, and the table waits for a run that finds them all;
`--seed-indices 2,3` trains only those seed indices, seed by seed (every point at the first, then the next),
and writes no table: a seed index whose runs all come from one CPU model stays whole, and an interrupted
pass leaves complete seed indices rather than a patchwork. `--reverse` walks the points from the end, so a process that finished its shard can take on
another shard's remaining points from the other side. Points are trained nearest the default first
(L1 distance in lattice steps), so a partial lattice is a neighbourhood of the default.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import sys
import time
from dataclasses import dataclass

from pmlbal.records import RunLockedError, atomic_write_text, run_key, find_existing
from pmlbal.train import train
from pmlbal.config import TrainConfig

FIELDS = ("balance_exp", "temperature_exp", "batch_exp", "seed", "recall@1", "map_at_r", "run_id",
          "balance", "temperature", "batch_size")


@dataclass(frozen=True)
class Lattice:
    """balance 2^b, temperature 2^t, batch 2^s; `seeds` runs a point; `centre` the default's exponents."""

    balance_exp: range
    temperature_exp: range
    batch_exp: range
    seeds: int = 3
    #: samples per class: half the batch (2 classes a batch on the 10-class sets) or the data set's rule.
    half_batch_per_class: bool = True
    runs_dir: str | None = None
    centre: tuple[int, int, int] = (0, -4, 5)

    def points(self) -> list[tuple[int, int, int]]:
        grid = itertools.product(self.balance_exp, self.temperature_exp, self.batch_exp)
        return sorted(grid, key=lambda p: sum(abs(a - c) for a, c in zip(p, self.centre)))


LATTICES = {
    "digits": Lattice(range(-4, 5), range(-5, 0), range(4, 7)),
    "fashion-mnist": Lattice(range(-4, 5), range(-5, 0), range(4, 7)),
    "cjk-glyphs": Lattice(range(-1, 4), range(-5, 0), range(6, 9), seeds=1, half_batch_per_class=False,
                          runs_dir="results", centre=(1, -4, 7)),
}


def point_config(dataset: str, b: int, t: int, bs: int, seed: int, epochs: int | None, runs_dir: str,
                 cache_dir: str | None) -> TrainConfig:
    lattice, batch = LATTICES[dataset], 2**bs
    return TrainConfig(
        dataset=dataset, loss="BalancedNTXentLoss",
        loss_kwargs={"balance": 2.0**b, "temperature": 2.0**t},
        epochs=epochs, batch_size=batch, samples_per_class=batch // 2 if lattice.half_batch_per_class else None,
        train_split="train-sub", eval_split="val",
        seed=seed, results_dir=runs_dir, cache_dir=cache_dir, progress=False,
    ).resolved()


def parse_shard(ap: argparse.ArgumentParser, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        ap.error(f"--shard {text!r}: expected K/N, e.g. 0/2")
    if not 0 <= k < n:
        ap.error(f"--shard {text!r}: K must be in 0..N-1")
    return k, n


def parse_seed_indices(ap: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        indices = [int(x) for x in text.split(",")]
    except ValueError:
        ap.error(f"--seed-indices {text!r}: expected comma-separated integers, e.g. 2,3")
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        ap.error(f"--seed-indices {text!r}: seeds must be distinct and non-negative")
    return indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", choices=sorted(LATTICES))
    ap.add_argument("--seeds", type=int, default=None, help="runs a point (default: the lattice's)")
    ap.add_argument("--second-seeds", type=int, default=0, metavar="K",
                    help="once every point has its runs, one more seed at the K points whose first run scored best")
    ap.add_argument("--epochs", type=int, default=None, help="default: the data set's")
    ap.add_argument("--runs-dir", default=None, help="default: the lattice's (.cache/tuning-DATASET or results)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None, help="default: results/tuning_DATASET_grid.csv")
    ap.add_argument("--shard", default=None, metavar="K/N", help="train points K, K+N, ... only; no table")
    ap.add_argument("--seed-indices", default=None, metavar="LIST",
                    help="train only these seeds (comma-separated), seed by seed; no table")
    ap.add_argument("--reverse", action="store_true", help="train the points from the last one back")
    args = ap.parse_args()
    shard = parse_shard(ap, args.shard)
    lattice = LATTICES[args.dataset]
    seeds = args.seeds or lattice.seeds
    args.runs_dir = args.runs_dir or lattice.runs_dir or f".cache/tuning-{args.dataset}"
    args.out = args.out or f"results/tuning_{args.dataset}_grid.csv"
    if args.seed_indices is not None:
        indices = parse_seed_indices(ap, args.seed_indices)
        rows, skipped = run_points(args, [(*p, seed) for seed in indices for p in lattice.points()], shard)
        print(f"{len(rows)} runs recorded at seeds {indices}{f', {skipped} being trained elsewhere' if skipped else ''}")
        return
    points = [(*p, seed) for p in lattice.points() for seed in range(seeds)]
    rows, skipped = run_points(args, points, shard)
    if args.second_seeds and not skipped:
        # Every shard picks the same K points, so it needs all first runs, its own and the others'.
        everyone = rows if shard is None else recorded_rows(args, points)
        if len(everyone) == len(points):
            rows = everyone
            firsts = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[5])[: args.second_seeds]
            more, skipped = run_points(args, [(*r[:3], seeds) for r in firsts], shard)
            rows += more
    if shard or skipped or len(rows) < len(points):
        print(f"{len(rows)} runs recorded{f', {skipped} being trained elsewhere' if skipped else ''}; "
              f"run without --shard once all are done to write the table")
        return
    rows.sort(key=lambda row: row[:4])
    buf = io.StringIO()
    buf.write(f"# {' '.join(['python'] + sys.argv)}\n")
    w = csv.writer(buf)
    w.writerow(FIELDS)
    w.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    print(f"table: {args.out} ({len(rows)} runs)")


def recorded_rows(args, points: list[tuple[int, int, int, int]]) -> list[tuple]:
    """The table rows of the points already recorded, training nothing."""
    rows = []
    for b, t, bs, seed in points:
        cfg = point_config(args.dataset, b, t, bs, seed, args.epochs, args.runs_dir, args.cache_dir)
        record = find_existing(cfg.results_dir, run_key(cfg), seed)
        if record is not None:
            rows.append(table_row(b, t, bs, seed, cfg, record))
    return rows


def table_row(b: int, t: int, bs: int, seed: int, cfg: TrainConfig, record: dict) -> tuple:
    final = record["final"]
    return (b, t, bs, seed, final["recall@1"], final["map_at_r"], record["run_id"],
            cfg.loss_kwargs["balance"], cfg.loss_kwargs["temperature"], cfg.batch_size)


def run_points(args, points: list[tuple[int, int, int, int]], shard) -> tuple[list[tuple], int]:
    """Train (or read back) each (balance_exp, temperature_exp, batch_exp, seed); the table rows and the
    number skipped because another process holds their run lock."""
    rows, skipped, t0 = [], 0, time.time()
    order = list(enumerate(points, 1))
    for n, (b, t, bs, seed) in reversed(order) if args.reverse else order:
        if shard and (n - 1) % shard[1] != shard[0]:
            continue
        cfg = point_config(args.dataset, b, t, bs, seed, args.epochs, args.runs_dir, args.cache_dir)
        try:
            record = find_existing(cfg.results_dir, run_key(cfg), seed) or train(cfg)
        except RunLockedError:
            print(f"[{n}/{len(points)}] another process is training this point; skipped", flush=True)
            skipped += 1
            continue
        final = record["final"]
        rows.append(table_row(b, t, bs, seed, cfg, record))
        print(f"[{n}/{len(points)}] balance 2^{b} temperature {cfg.loss_kwargs['temperature']:g} batch {2**bs} "
              f"seed {seed}: R@1 {final['recall@1']:.4f} MAP@R {final['map_at_r']:.4f} ({time.time() - t0:.0f}s)",
              flush=True)
    return rows, skipped


if __name__ == "__main__":
    main()
