"""pmlbal.metrics.retrieval_metrics vs PML's AccuracyCalculator (faiss CPU), same embeddings, one run.

Usage:
    python benchmarks/retrieval.py [--sizes cub,sop,200k] [--device cpu|cuda]

Sizes: cub = 5,924 x 512 (100 classes, Recall@{1,2,4,8} + MAP@R); sop = 60,502 x 512
(11,316 classes, Recall@{1,10,100,1000} + MAP@R); 200k = 200,000 x 512 (pmlbal only).
PML is run with k="max_bin_count" (its fast setting; its default k=None searches the
whole set) and computes precision_at_1, r_precision and MAP@R (it has no Recall@K).
Each measurement runs in its own subprocess so peak memory is its own (CUDA
max_memory_allocated or growth of peak RSS). Prints times, equality check and ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {
    "cub": (5924, 100, (1, 2, 4, 8)),
    "sop": (60502, 11316, (1, 10, 100, 1000)),
    "200k": (200000, 20000, (1, 10, 100, 1000)),
}


def make_embeddings(n: int, classes: int, dim: int = 512):
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g)
    x = centres[labels] + 4.0 * torch.randn(n, dim, generator=g)  # overlapping classes: metrics well below 1
    return torch.nn.functional.normalize(x, dim=1), labels


def measure(which: str, size: str, device: str) -> dict:
    import torch

    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from pmlbal.metrics import retrieval_metrics

    n, classes, ks = SIZES[size]
    x, y = make_embeddings(n, classes)
    if device == "cuda":
        x, y = x.cuda(), y.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if which == "pmlbal":
        out = retrieval_metrics(x, y, ks=ks, device=device)
        out = {"precision_at_1": out["precision_at_1"], "r_precision": out["r_precision"],
               "map_at_r": out["map_at_r"], f"recall@{ks[-1]}": out[f"recall@{ks[-1]}"]}
    else:
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        res = calc.get_accuracy(x.cpu(), y.cpu())
        out = {"precision_at_1": res["precision_at_1"], "r_precision": res["r_precision"],
               "map_at_r": res["mean_average_precision_at_r"]}
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"s": seconds, "peak_mb": peak / 2**20, "metrics": out}


def run(which, size, device, timeout) -> dict:
    cmd = [sys.executable, __file__, "--one", which, "--sizes", size, "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="cub,sop")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.sizes, args.device)))
        return

    import torch

    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# retrieval metrics, 512-d, pmlbal on {args.device} vs PML AccuracyCalculator (faiss CPU), {name}")
    print(f"{'size':<6}{'n':>8} | {'pmlbal s':>9}{'MB':>8} | {'PML s':>9}{'MB':>8} | {'speed-up':>8} | same values")
    for size in args.sizes.split(","):
        ours = _median([run("pmlbal", size, args.device, args.timeout) for _ in range(args.repeats)])
        theirs = {"skipped": "pmlbal only"} if size == "200k" else _median(
            [run("pml", size, "cpu", args.timeout) for _ in range(args.repeats)])
        same = ""
        if "metrics" in ours and "metrics" in theirs:
            same = all(abs(ours["metrics"][k] - theirs["metrics"][k]) < 1e-9 for k in theirs["metrics"])
            same = "yes" if same else f"NO {ours['metrics']} vs {theirs['metrics']}"
        ratio = f"{theirs['s'] / ours['s']:>7.1f}x" if "s" in ours and "s" in theirs else f"{'':>8}"
        print(f"{size:<6}{SIZES[size][0]:>8} | {_cells(ours)} | {_cells(theirs)} | {ratio} | {same}", flush=True)
        if "metrics" in ours:
            print(f"        pmlbal metrics: {json.dumps({k: round(v, 4) for k, v in ours['metrics'].items()})}")


def _median(runs: list[dict]) -> dict:
    ok = [r for r in runs if "s" in r]
    if not ok:
        return runs[0]
    ok.sort(key=lambda r: r["s"])
    return ok[len(ok) // 2]


def _cells(r: dict) -> str:
    if "s" in r:
        return f"{r['s']:>9.2f}{r['peak_mb']:>8.0f}"
    return f"{(r.get('error') or r.get('skipped'))[:17]:>17}"


if __name__ == "__main__":
    main()
