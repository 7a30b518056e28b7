"""Start-up of `pmlbal --help` (issue 46: under 1 s wall on an idle core), against a bare interpreter.

Each command runs in a fresh Python process, as a user's shell starts it; the rounds interleave the
commands (round 1: every command once, then round 2, ...) so that a busy machine slows them alike,
and each command's figure is the median of its rounds. The baseline is `python -c "pass"` in the same
rounds (what no command can beat); `import torch` is there for scale, since `--help` must not start it.

    python benchmarks/cli_help_time.py [--root DIR] [--repeats 5]

`--root`: the checkout whose `pmlbal` is timed (default: this one), e.g. a worktree of an older commit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = ("python -c pass", ["-c", "pass"])
HELPS = [
    ("import torch", ["-c", "import torch"]),
    ("import pmlbal", ["-c", "import pmlbal"]),
    ("pmlbal --help", ["-m", "pmlbal.cli", "--help"]),
    ("pmlbal train --help", ["-m", "pmlbal.cli", "train", "--help"]),
    ("pmlbal bench --help", ["-m", "pmlbal.cli", "bench", "--help"]),
    ("pmlbal tune --help", ["-m", "pmlbal.cli", "tune", "--help"]),
    ("pmlbal records --help", ["-m", "pmlbal.cli", "records", "--help"]),
]


def time_once(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one `python ARGS` in a fresh process, run in `cwd` (`python -c` puts the working
    folder first on the path: the root's package, not the caller's); fails loudly if the command does."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.root.resolve())}
    commands = [BASELINE, *HELPS]
    time_once(BASELINE[1], env, args.root)  # warm the file cache: the first process reads every .pyc from disk
    times: dict[str, list[float]] = {name: [] for name, _ in commands}
    for _ in range(args.repeats):
        for name, argv in commands:
            times[name].append(time_once(argv, env, args.root))
    base = statistics.median(times[BASELINE[0]])
    print(f"{args.root}: median of {args.repeats} fresh processes each")
    for name, _ in commands:
        median = statistics.median(times[name])
        print(f"{name:<24} {median:6.2f} s  {median / base:5.2f}x python -c pass")


if __name__ == "__main__":
    main()
