"""Build a real objective for benchmarks/tuning.py: training runs over a full grid of one data set.

Usage:
    python benchmarks/tuning_table.py [--dataset digits|fashion-mnist] [--seeds 3] [--epochs N]
                                      [--out results/tuning_DATASET_grid.csv]

Every point of balance (2^-4..2^4) x temperature (2^-5..2^-1) x batch size (16, 32, 64) is
trained with BalancedNTXentLoss on the data set's train-sub split and scored on its class-disjoint
validation split, once per training seed (epochs: the data set's default unless given). Runs are ordinary harness runs: their records go to
`--runs-dir` and a re-run skips every recorded point, so an interrupted build resumes. The
table (one row per point and seed, with Recall@1 and MAP@R) is written atomically at the end.
Searches then replay against the table, so cd, grid, random and TPE are compared on the very
same training outcomes, and each search seed draws its training seed per point (real
run-to-run noise), as a tabular HPO benchmark does.

`--shard K/N` trains only every N-th point starting at K (0-based) and writes no table: N
processes of one thread each fill the grid faster than one process of N threads on a small
model; a last run without --shard finds every record and writes the table. A point another
process is training (its run lock) is skipped, and the table waits for a run that finds them all;
`--reverse` walks the points from the end, so a process that finished its shard can take on
another shard's remaining points from the other side.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import sys
import time

from pmlbal.records import RunLockedError, atomic_write_text, config_key, find_existing
from pmlbal.train import TrainConfig, identity, train

BALANCE_EXP = range(-4, 5)
TEMPERATURE_EXP = range(-5, 0)
BATCH_EXP = range(4, 7)
FIELDS = ("balance_exp", "temperature_exp", "batch_exp", "seed", "recall@1", "map_at_r", "run_id")


def point_config(dataset: str, b: int, t: int, bs: int, seed: int, epochs: int | None, runs_dir: str,
                 cache_dir: str | None) -> TrainConfig:
    batch = 2**bs
    return TrainConfig(
        dataset=dataset, loss="BalancedNTXentLoss", loss_kwargs={"balance": 2.0**b, "temperature": 2.0**t},
        epochs=epochs, batch_size=batch, samples_per_class=batch // 2, train_split="train-sub", eval_split="val",
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="default: the data set's")
    ap.add_argument("--runs-dir", default=None, help="default: .cache/tuning-DATASET")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None, help="default: results/tuning_DATASET_grid.csv")
    ap.add_argument("--shard", default=None, metavar="K/N", help="train points K, K+N, ... only; no table")
    ap.add_argument("--reverse", action="store_true", help="train the points from the last one back")
    args = ap.parse_args()
    shard = parse_shard(ap, args.shard)
    args.runs_dir = args.runs_dir or f".cache/tuning-{args.dataset}"
    args.out = args.out or f"results/tuning_{args.dataset}_grid.csv"
    points = list(itertools.product(BALANCE_EXP, TEMPERATURE_EXP, BATCH_EXP, range(args.seeds)))
    rows, skipped, t0 = [], 0, time.time()
    order = list(enumerate(points, 1))
    for n, (b, t, bs, seed) in reversed(order) if args.reverse else order:
        if shard and (n - 1) % shard[1] != shard[0]:
            continue
        cfg = point_config(args.dataset, b, t, bs, seed, args.epochs, args.runs_dir, args.cache_dir)
        try:
            record = find_existing(cfg.results_dir, config_key(identity(cfg)), seed) or train(cfg)
        except RunLockedError:
            print(f"[{n}/{len(points)}] another process is training this point; skipped", flush=True)
            skipped += 1
            continue
        final = record["final"]
        rows.append((b, t, bs, seed, final["recall@1"], final["map_at_r"], record["run_id"]))
        print(f"[{n}/{len(points)}] balance 2^{b} temperature 2^{t} batch {2**bs} seed {seed}: "
              f"R@1 {final['recall@1']:.4f} MAP@R {final['map_at_r']:.4f} ({time.time() - t0:.0f}s)", flush=True)
    if shard or skipped:
        print(f"{len(rows)} points recorded{f', {skipped} being trained elsewhere' if skipped else ''}; "
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


if __name__ == "__main__":
    main()
