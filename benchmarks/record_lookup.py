"""Record look-up cost against the number of stored records (issue 27: records found by name).

Builds N synthetic run records (N = 50, then 2,000; each the size of a real one, about 28 KB) in
a temporary folder and times `records.find_existing` for a stored configuration (a hit) and for
one that is not stored (a miss, what every planned run of a bench asks first), plus
`records.find_failed`. Records are named by the key they hold, so a look-up lists the folder
once, tests each name for the key and parses only the matches: what still grows with N is the
directory listing (about half a microsecond a name), not the JSON parsing (about half a
millisecond a record), which every look-up did for every record before (0.66 s per miss at 2,000).

    python benchmarks/record_lookup.py [--sizes 50 2000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pmlbal.records import NUMERICS_VERSION, SCHEMA_VERSION, config_key, find_existing, find_failed, new_run_id, write_record


def make_records(folder: Path, n: int) -> list[tuple[str, int]]:
    """`n` records (n/2 configurations x 2 seeds) with a realistic body; returns their (key, seed)."""
    out = []
    steps = [{"loss": 1.0, "pos_term": -1.0, "entropy_term": 2.0}] * 300  # the bulk of a real record
    for i in range(n):
        cfg = {"dataset": "digits", "loss": "BalancedNTXentLoss", "loss_kwargs": {"balance": 1 + i // 2},
               "seed": i % 2, "batch_size": 50}
        key = config_key(cfg)
        write_record({"schema": SCHEMA_VERSION, "run_id": new_run_id(cfg), "config": cfg, "config_key": key,
                      "seed": cfg["seed"], "command": "pmlbal train", "final": {"recall@1": 0.5}, "steps": steps,
                      "numerics": {"version": NUMERICS_VERSION, "threads": 1, "device": "cpu"}},
                     folder)
        out.append((key, cfg["seed"]))
    return out


def time_lookups(folder: Path, stored: list[tuple[str, int]], repeats: int) -> dict[str, float]:
    """Median seconds of a hit, a miss and a failed-run look-up."""
    def median(f) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    key, seed = stored[len(stored) // 2]
    assert find_existing(folder, key, seed) is not None
    return {"hit": median(lambda: find_existing(folder, key, seed)),
            "miss": median(lambda: find_existing(folder, "0" * 12, 0)),
            "failed": median(lambda: find_failed(folder, key, seed))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 2000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    results = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            stored = make_records(Path(tmp), n)
            results[n] = time_lookups(Path(tmp), stored, args.repeats)
        print(f"{n:>6} records: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in results[n].items()))
    small, large = results[min(args.sizes)], results[max(args.sizes)]
    print(f"ratio {max(args.sizes)}/{min(args.sizes)}: "
          + ", ".join(f"{k} {large[k] / small[k]:.2f}x" for k in small))


if __name__ == "__main__":
    main()
