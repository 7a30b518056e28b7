"""The multi-seed lattice of a data set as one CSV row per recorded run (issue 47), from the records.

Usage:
    python benchmarks/lattice_csv.py [--dataset cjk-glyphs] [--seeds 0-9] [--out results/lattice/cjk-glyphs_BalancedNTXentLoss.csv]
    python benchmarks/lattice_csv.py --check     # exit 1 if the committed CSV differs from the records

Reads, for every point of `tuning_table.LATTICES[dataset]` (balance 2^b x temperature 2^t x batch 2^s,
BalancedNTXentLoss on train-sub, validation MAP@R on the fixed class-disjoint split at the data set's
epochs) and every seed index asked for, the current record of that run, if one exists; trains nothing.
Columns: `point` (a stable key of the lattice coordinates, `b{b}_t{t}_s{s}` in log2 exponents), the
coordinates (`balance`, `temperature`, `batch_size`), `seed`, `map_at_r`, `recall@1`, `run_id`, `cpu` (the
fingerprint id of the CPU that computed it, `pmlbal.cpu`: each seed index's runs come from one CPU model)
and `threads`. Runs come in point order, then by seed; a point with fewer seeds than others is left as it
is (the summary line says how many points have each count). The replay (`benchmarks/tuning.py`) reads it.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tuning_table import LATTICES, point_config  # noqa: E402

from pmlbal.board_rows import cpu_of  # noqa: E402
from pmlbal.records import atomic_write_text, find_existing, run_key  # noqa: E402

FIELDS = ("point", "balance", "temperature", "batch_size", "seed", "map_at_r", "recall@1", "run_id", "cpu", "threads")


def point_key(b: int, t: int, s: int) -> str:
    return f"b{b}_t{t}_s{s}"


def lattice_rows(dataset: str, seeds: range, runs_dir: str | None = None) -> list[dict]:
    """One dict per recorded run of the lattice at the given seed indices (`FIELDS`)."""
    lattice = LATTICES[dataset]
    runs_dir = runs_dir or lattice.runs_dir or f".cache/tuning-{dataset}"
    rows = []
    for b, t, s in sorted(lattice.points()):
        for seed in seeds:
            cfg = point_config(dataset, b, t, s, seed, None, runs_dir, None)
            record = find_existing(cfg.results_dir, run_key(cfg), seed)
            if record is None:
                continue
            fp = cpu_of(record) or {}
            rows.append({"point": point_key(b, t, s), "balance": 2.0**b, "temperature": 2.0**t, "batch_size": 2**s,
                         "seed": seed, "map_at_r": record["final"]["map_at_r"], "recall@1": record["final"]["recall@1"],
                         "run_id": record["run_id"], "cpu": fp.get("id", ""),
                         "threads": (record.get("numerics") or {}).get("threads", "")})
    return rows


def render(rows: list[dict], command: str) -> str:
    buf = io.StringIO()
    buf.write(f"# {command}\n")
    w = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def summary(rows: list[dict], dataset: str) -> str:
    per_point = Counter(r["point"] for r in rows)
    counts = Counter(per_point.values())
    points = len(LATTICES[dataset].points())
    cpus = {seed: sorted({r["cpu"] for r in rows if r["seed"] == seed}) for seed in sorted({r["seed"] for r in rows})}
    return (f"{len(rows)} runs over {len(per_point)} of {points} points; points by runs: "
            + ", ".join(f"{n} run{'s' if n != 1 else ''}: {c}" for n, c in sorted(counts.items()))
            + "; CPU per seed index: " + ", ".join(f"{s}: {'/'.join(c) or '?'}" for s, c in cpus.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cjk-glyphs", choices=sorted(LATTICES))
    ap.add_argument("--seeds", default="0-9", help="seed indices, LOW-HIGH (default 0-9)")
    ap.add_argument("--out", default=None, help="default: results/lattice/DATASET_BalancedNTXentLoss.csv")
    ap.add_argument("--check", action="store_true", help="compare with the committed CSV; write nothing")
    args = ap.parse_args()
    low, _, high = args.seeds.partition("-")
    seeds = range(int(low), int(high or low) + 1)
    out = Path(args.out or f"results/lattice/{args.dataset}_BalancedNTXentLoss.csv")
    rows = lattice_rows(args.dataset, seeds)
    text = render(rows, f"python benchmarks/lattice_csv.py --dataset {args.dataset} --seeds {args.seeds}")
    print(summary(rows, args.dataset))
    if args.check:
        same = out.is_file() and out.read_text() == text
        print(f"{out}: {'matches the records' if same else 'differs from the records: re-run without --check'}")
        return 0 if same else 1
    atomic_write_text(out, text)
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
