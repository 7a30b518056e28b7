"""Tuning trials per hour with N trials sharing one device: `pmlbal tune --workers N`, N = 1, 2, 4.

Usage:
    python benchmarks/tune_workers.py --root CUB_ROOT [--workers 1,2,4] [--window 60] [--device cuda]
                                      [--dataset cub]
                                      [--epochs 1] [--backbone resnet50] [--batch-size 128] [--out DIR]

Each N runs `pmlbal tune --search random --workers N` (random search: every worker always has a
trial to run) on the class-disjoint `val` split for `--window` seconds of wall time, started in its
own process session and then stopped with everything it spawned. Two figures per N:
  window: completed trials x 3600 / window (start-up of the worker processes included);
  steady: N x 3600 / median trial time (the records' wall_time_s, run while N trials share the device).
The batch size is fixed (`--space batch_size=B:B`) so every trial does the same work; the learning rate
and the loss's own coordinates are sampled. Peak device memory per trial is read from nvidia-smi where
there is one. Prints one row per N and the ratio to N = 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


_CHILD: subprocess.Popen | None = None  # the running tune command, leader of its own process session


def _stop_child_and_exit(signum, frame) -> None:
    # The tune command runs in its own session (so its workers can be stopped together): a timeout
    # that kills this script must take them along, or they would hold the device past the window.
    if _CHILD is not None and _CHILD.poll() is None:
        os.killpg(_CHILD.pid, signal.SIGKILL)
    sys.exit(128 + signum)


def run_window(n: int, args, out: Path) -> dict:
    global _CHILD
    folder = out / f"workers{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pmlbal.cli", "tune", "--dataset", args.dataset,
           *(["--root", str(args.root)] if args.root else []), "--search", "random", "--budget", "10000", "--workers", str(n), "--no-final",
           "--storage", f"journal:{folder / 'study.log'}", "--study", f"workers{n}",
           "--results-dir", str(folder), "--cache-dir", str(args.cache_dir), "--device", args.device,
           "--epochs", str(args.epochs), "--backbone", args.backbone, "--batch-size", str(args.batch_size), "--space", f"batch_size={args.batch_size}:{args.batch_size}"]
    log = open(folder / "tune.log", "wb")
    t0 = time.perf_counter()
    proc = _CHILD = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak_mb = 0.0
    while time.perf_counter() - t0 < args.window and proc.poll() is None:
        time.sleep(1.0)
        peak_mb = max(peak_mb, _device_memory_mb())
    elapsed = time.perf_counter() - t0
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the tune command and its worker processes
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()
    records = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]
    times = [r["wall_time_s"] for r in records]
    row = {"workers": n, "window_s": round(elapsed, 1), "completed": len(records),
           "window_per_h": 3600 * len(records) / elapsed,
           "median_trial_s": statistics.median(times) if times else None,
           "steady_per_h": n * 3600 / statistics.median(times) if times else None,
           "device_peak_mb": peak_mb or None}
    if not records:
        row["log_tail"] = (folder / "tune.log").read_text(errors="replace")[-600:]
    return row


def _device_memory_mb() -> float:
    """Memory in use on the device, all processes together (0 without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cub", help="a registered data set (digits: a quick dry run)")
    ap.add_argument("--root", type=Path, default=None, help="its layout (benchmarks/synthetic_cub.py writes a CUB one)")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--window", type=float, default=60.0, help="seconds of wall time per N")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("tune-workers"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="decoded-image cache (default OUT/cache)")
    args = ap.parse_args()
    args.cache_dir = args.cache_dir or args.out / "cache"
    signal.signal(signal.SIGTERM, _stop_child_and_exit)
    _prebuild_caches(args)
    print(f"# pmlbal tune --workers N on one {args.device} device: {args.dataset} at {args.root}, {args.backbone}, "
          f"B={args.batch_size}, {args.epochs} epoch(s) a trial, {args.window:.0f} s per N")
    print(f"{'N':>3} {'done':>5} {'window/h':>9} {'median s':>9} {'steady/h':>9} {'x N=1':>6} {'peak MB':>8}")
    base = None
    for n in (int(w) for w in args.workers.split(",")):
        row = run_window(n, args, args.out)
        rate = row["steady_per_h"] or row["window_per_h"]
        base = base or rate
        median = f"{row['median_trial_s']:>9.1f}" if row["median_trial_s"] else f"{'-':>9}"
        steady = f"{row['steady_per_h']:>9.0f}" if row["steady_per_h"] else f"{'-':>9}"
        peak = f"{row['device_peak_mb']:>8.0f}" if row["device_peak_mb"] else f"{'-':>8}"
        print(f"{n:>3} {row['completed']:>5} {row['window_per_h']:>9.0f} {median} {steady} "
              f"{(rate / base if base else 0):>5.2f}x {peak}", flush=True)
        print("    " + json.dumps(row), flush=True)


def _prebuild_caches(args) -> None:
    """Decode train-sub and val once, before any window: no N pays for it."""
    from pmlbal.data import create
    from pmlbal.data.cache import load_or_build
    from pmlbal.registry import dataset_spec

    size = dataset_spec(args.dataset).defaults["cache_size"]
    for split in ("train-sub", "val"):
        load_or_build(create(args.dataset, args.root and str(args.root), split), size, args.cache_dir, progress=False)


if __name__ == "__main__":
    main()
