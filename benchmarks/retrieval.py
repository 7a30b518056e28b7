"""pmlbal.metrics.retrieval_metrics vs PML's AccuracyCalculator (faiss CPU), same embeddings, one run.

Usage:
    python benchmarks/retrieval.py [--sizes cub,sop,200k] [--device cpu|cuda] [--warm 5] [--profile FILE]

Sizes: cub = 5,924 x 512 (100 classes, Recall@{1,2,4,8} + MAP@R); sop = 60,502 x 512
(11,316 classes, Recall@{1,10,100,1000} + MAP@R); 200k = 200,000 x 512 (pmlbal only);
small = 1,000 x 512 (a dry run). PML is run with k="max_bin_count" (its fast setting; its
default k=None searches the whole set) and computes precision_at_1, r_precision and MAP@R
(it has no Recall@K). Each measurement runs in its own subprocess: "cold" is the first call
in that fresh process (CUDA context already made, libraries such as cuBLAS not yet), "warm"
the median of `--warm` repeat calls in the same process (what a training loop pays every
epoch). Peak memory is the first call's (CUDA max_memory_allocated or growth of peak RSS).
`--profile FILE` writes torch.profiler's table of the cold pmlbal call (where the cold time
goes). Prints times, ratios and the largest difference from PML's values.
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
    "small": (1000, 50, (1, 2, 4, 8)),
}


def make_embeddings(n: int, classes: int, dim: int = 512):
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g)
    x = centres[labels] + 4.0 * torch.randn(n, dim, generator=g)  # overlapping classes: metrics well below 1
    return torch.nn.functional.normalize(x, dim=1), labels


def measure(which: str, size: str, device: str, warm: int, profile: str | None = None) -> dict:
    import torch

    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from pmlbal.metrics import retrieval_metrics

    n, classes, ks = SIZES[size]
    x, y = make_embeddings(n, classes)
    if device == "cuda":
        x, y = x.cuda(), y.cuda()  # makes the CUDA context: not part of any call's time
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def call() -> dict:
        if which == "pmlbal":
            out = retrieval_metrics(x, y, ks=ks, device=device)
            return {"precision_at_1": out["precision_at_1"], "r_precision": out["r_precision"],
                    "map_at_r": out["map_at_r"], f"recall@{ks[-1]}": out[f"recall@{ks[-1]}"]}
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        res = calc.get_accuracy(x.cpu(), y.cpu())
        return {"precision_at_1": res["precision_at_1"], "r_precision": res["r_precision"],
                "map_at_r": res["mean_average_precision_at_r"]}

    def timed() -> tuple[float, dict]:
        t0 = time.perf_counter()
        out = call()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            cold, out = timed()
        from profiling import write_tables  # benchmarks/ is on the path of a script run

        with open(profile, "w") as f:
            f.write(f"# cold {which} call, {size}, {device}: {cold:.3f} s (profiler overhead included)\n")
            write_tables(prof, f, device, 30)
    else:
        cold, out = timed()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    warm_times = sorted(timed()[0] for _ in range(warm))
    return {"s": cold, "warm_s": warm_times[len(warm_times) // 2] if warm_times else None,
            "peak_mb": peak / 2**20, "metrics": out}


def run(which, size, device, args, profile=None) -> dict:
    warm = args.warm if which == "pmlbal" or args.pml_warm is None else args.pml_warm
    cmd = [sys.executable, __file__, "--one", which, "--sizes", size, "--device", device, "--warm", str(warm)]
    cmd += ["--profile", profile] if profile else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="cub,sop")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement; the median is reported")
    ap.add_argument("--warm", type=int, default=3, help="repeat calls after the cold one, in the same process")
    ap.add_argument("--pml-repeats", type=int, default=None, help="fresh processes for PML (default: --repeats)")
    ap.add_argument("--pml-warm", type=int, default=None, help="repeat calls for PML (default: --warm)")
    ap.add_argument("--profile", default=None, help="write a profile of the cold pmlbal call to FILE.<size>.txt")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.sizes, args.device, args.warm, args.profile)))
        return

    import torch

    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# retrieval metrics, 512-d, pmlbal on {args.device} vs PML AccuracyCalculator (faiss CPU), {name}, "
          f"torch {torch.__version__}, fp32 matmul precision {_matmul_precision()}")
    print("# cold: first call in a fresh process (median of --repeats processes); warm: median of --warm repeat calls")
    print(f"{'size':<6}{'n':>8} | {'pmlbal cold':>11}{'warm':>8}{'MB':>7} | {'PML cold':>9}{'warm':>8}{'MB':>7} | "
          f"{'x cold':>7}{'x warm':>7} | max |diff| vs PML")
    for size in args.sizes.split(","):
        ours = _median([run("pmlbal", size, args.device, args) for _ in range(args.repeats)])
        if args.profile:
            run("pmlbal", size, args.device, args, profile=f"{args.profile}.{size}.txt")
        theirs = {"skipped": "pmlbal only"} if size == "200k" else _median(
            [run("pml", size, "cpu", args) for _ in range(args.pml_repeats or args.repeats)])
        diff = ""
        if "metrics" in ours and "metrics" in theirs:
            d = max(abs(ours["metrics"][k] - theirs["metrics"][k]) for k in theirs["metrics"])
            diff = f"{d:.1e} ({'same to 1e-6' if d <= 1e-6 else 'DIFFERS beyond 1e-6'})"
        ratios = f"{_ratio(theirs, ours, 's')}{_ratio(theirs, ours, 'warm_s')}"
        print(f"{size:<6}{SIZES[size][0]:>8} | {_cells(ours)} | {_cells(theirs)} | {ratios} | {diff}", flush=True)
        if "metrics" in ours:
            print(f"        pmlbal metrics: {json.dumps({k: round(v, 6) for k, v in ours['metrics'].items()})}")
        if "metrics" in theirs:
            print(f"        PML metrics:    {json.dumps({k: round(v, 6) for k, v in theirs['metrics'].items()})}")


def _matmul_precision() -> str:
    import torch

    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # legacy and new TF32 flags mixed: name the cuBLAS one
        return str(torch.backends.cuda.matmul.fp32_precision)


def _ratio(theirs: dict, ours: dict, key: str) -> str:
    if theirs.get(key) and ours.get(key):
        return f"{theirs[key] / ours[key]:>6.1f}x"
    return f"{'':>7}"


def _median(runs: list[dict]) -> dict:
    ok = [r for r in runs if "s" in r]
    if not ok:
        return runs[0]
    ok.sort(key=lambda r: r["s"])
    return ok[len(ok) // 2]


def _cells(r: dict) -> str:
    if "s" in r:
        warm = f"{r['warm_s']:>8.3f}" if r.get("warm_s") is not None else f"{'':>8}"
        return f"{r['s']:>11.3f}{warm}{r['peak_mb']:>7.0f}"
    return f"{(r.get('error') or r.get('skipped'))[:26]:>26}"


if __name__ == "__main__":
    main()
