"""Does a shorter validation horizon rank batch sizes like the full one? (docs/tuner.md, "Horizon")

Usage:
    python benchmarks/horizon.py [--short-epochs 2] [--points 0:-3,2:-2]

For each (balance, temperature) point of the recorded glyph lattice (exponents of 2, default: balance 1 at
T 1/8 and balance 4 at T 1/4, the two arms of the ridge), BalancedNTXentLoss is trained at batch 64, 128
and 256 for `--short-epochs` epochs on train-sub and scored on the validation classes, exactly as the
lattice's 4-epoch runs (`benchmarks/tuning_table.py`, same configuration but the epochs, seed 0); the
4-epoch values are read back from their records. Printed: validation MAP@R per batch size at both
horizons, the differences between neighbouring batch sizes, and whether the two horizons order the batch
sizes alike. Runs are ordinary harness runs recorded under results/ (a re-run reads them back).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning_table import point_config  # noqa: E402

from pmlbal.records import find_existing, run_key  # noqa: E402
from pmlbal.train import train  # noqa: E402

BATCH_EXPS = (6, 7, 8)


def value(b: int, t: int, bs: int, epochs: int | None, train_missing: bool) -> float:
    """Validation MAP@R (%) of lattice point (b, t, bs), seed 0, at `epochs` (None: the lattice's 4)."""
    cfg = point_config("cjk-glyphs", b, t, bs, 0, epochs, "results", None)
    record = find_existing(cfg.results_dir, run_key(cfg), 0)
    if record is None:
        if not train_missing:
            raise SystemExit(f"the lattice has no record of balance 2^{b}, T 2^{t}, batch {2**bs}: "
                             "run benchmarks/tuning_table.py --dataset cjk-glyphs first")
        record = train(cfg)
    return 100 * record["final"]["map_at_r"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-epochs", type=int, default=2)
    ap.add_argument("--points", default="0:-3,2:-2", help="balance_exp:temperature_exp,...")
    args = ap.parse_args()
    points = [tuple(int(x) for x in p.split(":")) for p in args.points.split(",")]
    print("| balance | T | horizon | " + " | ".join(f"batch {2**s}" for s in BATCH_EXPS)
          + " | 128 − 64 | 256 − 128 | order |")
    print("|---|---|---|" + "---|" * (len(BATCH_EXPS) + 3))
    for b, t in points:
        for label, epochs, fresh in ((f"{args.short_epochs} epochs", args.short_epochs, True),
                                     ("4 epochs", None, False)):
            v = [value(b, t, s, epochs, fresh) for s in BATCH_EXPS]
            order = " > ".join(str(2**BATCH_EXPS[i]) for i in sorted(range(3), key=lambda i: -v[i]))
            print(f"| {2.0**b:g} | 1/{2**-t} | {label} | " + " | ".join(f"{x:.2f}" for x in v)
                  + f" | {v[1] - v[0]:+.2f} | {v[2] - v[1]:+.2f} | {order} |", flush=True)


if __name__ == "__main__":
    main()
