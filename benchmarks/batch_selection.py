"""What choosing an epoch's batches costs, per batch source (docs/claims.md, "High-loss mini-batches").

Usage:
    python benchmarks/batch_selection.py [--dataset cjk-glyphs] [--batch-size 128] [--repeats 2]
                                         [--samplers m-per-class,spectral,osgd] [--train-steps 20]

For each `--sampler` of `pmlbal train`, the run is built as the harness builds it (untrained network,
the data set's defaults) and one epoch's batches are chosen `--repeats` times: the seconds spent
embedding the training set (spectral and osgd re-embed it every --resample-every epochs) and the seconds
the selection itself takes, apart. `--train-steps` optimiser steps of m-per-class batches, timed in the
same process, give the epoch's training time for the ratio (selection / training). Threads: whatever
OMP_NUM_THREADS says (the records' runs used 1). Nothing is recorded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from pmlbal.build import build_run
from pmlbal.config import TrainConfig
from pmlbal.evaluation import embed
from pmlbal.loop import train_epoch


def selection_seconds(cfg: TrainConfig, repeats: int) -> tuple[float, float, int]:
    """(embedding s, selection s without the embedding, batches) of one epoch's choice, medians of `repeats`."""
    run = build_run(cfg)
    embeds, totals, n = [], [], 0
    for r in range(repeats):
        spent = []

        def timed_embed():
            t = time.perf_counter()
            z = embed(run.model, run.train_bank, cfg.input_size, run.device, augment=run.gen, flip=cfg.hflip)
            spent.append(time.perf_counter() - t)
            return z

        t0 = time.perf_counter()
        n = len(run.batches.epoch(1 + r * cfg.resample_every, timed_embed))
        totals.append(time.perf_counter() - t0)
        embeds.append(sum(spent))
    e = statistics.median(embeds)
    return e, statistics.median(totals) - e, n


def epoch_training_seconds(cfg: TrainConfig, steps: int) -> float:
    """Seconds of one m-per-class epoch's optimiser steps, from `steps` of them."""
    run = build_run(cfg)
    batches = run.batches.epoch(1, lambda: None)
    run.batches.epoch = lambda n, embed_fn: batches[:steps]
    _, done, seconds, _ = train_epoch(run, 1)
    return seconds / len(done) * len(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cjk-glyphs")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--samplers", default="m-per-class,spectral,osgd")
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()
    base = TrainConfig(dataset=args.dataset, loss="BalancedNTXentLoss", batch_size=args.batch_size,
                       device="cpu", progress=False).resolved()
    train_s = epoch_training_seconds(base, args.train_steps)
    print(f"## {args.dataset}, batch {args.batch_size}, {torch.get_num_threads()} thread(s): choosing one epoch's batches\n")
    print(f"an epoch's training steps (m-per-class, from {args.train_steps} timed steps): {train_s:.1f} s\n")
    print("| sampler | batches | embedding s | selection s | total s | total / training epoch |")
    print("|---|---|---|---|---|---|")
    for name in args.samplers.split(","):
        cfg = replace(base, sampler=name)
        e, s, n = selection_seconds(cfg, args.repeats)
        print(f"| {name} | {n} | {e:.2f} | {s:.2f} | {e + s:.2f} | {(e + s) / train_s:.3f} |")


if __name__ == "__main__":
    main()
