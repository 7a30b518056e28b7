"""Forward+backward time and peak memory of pmlbal's losses next to PML's, in one run.

Usage:
    python benchmarks/losses.py [--device cpu|cuda] [--sizes 128,256,...] [--dim 512] [--profile FILE]

Every (loss, batch size) is measured in a fresh subprocess, so peak memory is that
run's alone: CUDA's max_memory_allocated, or the growth of the process's peak RSS on
the CPU. A PML configuration whose [#pos x #neg] tensor would not fit is reported as
skipped with the estimate, not run. On CUDA each run warms up for ~0.3 s and times ~0.5 s of
steps (at least --repeats). Prints a table with the PML / pmlbal ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {
    # name: (pmlbal constructor, PML constructor)
    "NTXent": ("BalancedNTXentLoss(temperature=0.07)", "NTXentLoss(temperature=0.07)"),
    "NTXent+chunk": ("BalancedNTXentLoss(temperature=0.07, chunk_size=1024)", None),
    "SupCon": ("BalancedSupConLoss(temperature=0.1)", "SupConLoss(temperature=0.1)"),
    "Contrastive": ("BalancedContrastiveLoss()", "ContrastiveLoss()"),
    "DHEL": ("DHELLoss()", None),
    "KCL": ("KCLLoss()", None),
    "AlphaCL": ("AlphaCLLoss()", None),
}


def pml_ntxent_bytes(batch: int, per_class: int) -> float:
    # PML's NTXentLoss builds [#pos_pairs x #neg_pairs] float tensors (about 4 alive at once).
    pos = batch * (per_class - 1)
    neg = batch * (batch - per_class)
    return 4.0 * pos * neg * 4


def measure_one(expr: str, batch: int, dim: int, device: str, per_class: int, repeats: int,
                profile: str | None = None) -> dict:
    import torch
    from pytorch_metric_learning import losses as L  # noqa: F401

    import pmlbal  # noqa: F401  (registers into PML)

    loss_fn = eval(f"L.{expr}")  # noqa: S307 - constructor strings from CASES only
    g = torch.Generator(device="cpu").manual_seed(0)
    emb = torch.randn(batch, dim, generator=g).to(device).requires_grad_(True)
    labels = torch.arange(batch // per_class).repeat_interleave(per_class).to(device)

    def step():
        emb.grad = None
        loss_fn(emb, labels).backward()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    # Baseline before the first step: the allocator keeps freed blocks, so a baseline
    # taken after a warm-up would hide the step's own peak on the CPU.
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    step()  # warm-up
    sync()
    if device == "cuda":
        # A GPU step of a few ms is mostly launch overhead and syncs, and the clocks ramp up under
        # load: warm up for ~0.3 s and time ~0.5 s of steps, else small batches read slower than large.
        first = max(time.perf_counter() - t0, 1e-4)
        for _ in range(min(100, int(0.3 / first))):
            step()
        sync()
        repeats = max(repeats, min(200, int(0.5 / first)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if profile:
        _profile_steps(step, sync, device, profile, f"{expr}, B={batch}, d={dim}, {device}")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times.sort()
    return {"ms": 1000 * times[len(times) // 2], "peak_mb": max(peak, 0) / 2**20,
            "saved_mb": saved_for_backward(loss_fn, emb, labels) / 2**20}


def _profile_steps(step, sync, device: str, path: str, title: str, steps: int = 5) -> None:
    """torch.profiler's table of `steps` warm steps: where a step's time goes (kernels, syncs, launches)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync()
    from profiling import write_tables  # benchmarks/ is on the path of a script run

    with open(path, "w") as f:
        f.write(f"# {steps} steps of {title}\n")
        write_tables(prof, f, device, 25)


def saved_for_backward(loss_fn, emb, labels) -> int:
    """Bytes autograd keeps between forward and backward: the activation memory chunking removes.

    Exact and device-independent, unlike peak RSS on the CPU (the allocator keeps freed blocks).
    """
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in seen:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(emb, labels)
    del loss
    return sum(seen.values()) - emb.untyped_storage().nbytes()


def run_case(expr, batch, args) -> dict:
    cmd = [sys.executable, __file__, "--one", expr, "--sizes", str(batch), "--dim", str(args.dim),
           "--device", args.device, "--per-class", str(args.per_class), "--repeats", str(args.repeats)]
    if args.profile:
        name = next(k for k, v in CASES.items() if expr in v)
        cmd += ["--profile", f"{args.profile}.{name}.{'pml' if expr == CASES[name][1] else 'pmlbal'}.{batch}.txt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "OOM" if "out of memory" in proc.stderr.lower() else tail[:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", default="128,256,512,1024,2048,4096,8192")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--memory-limit-gb", type=float, default=None,
                    help="skip PML runs estimated above this (default: 80%% of RAM or GPU memory)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--profile", default=None,
                    help="write torch.profiler's table of 5 steps of each run to FILE.<case>.<impl>.<B>.txt")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    if args.one:
        print(json.dumps(measure_one(args.one, sizes[0], args.dim, args.device, args.per_class, args.repeats,
                                     args.profile)))
        return

    import torch

    if args.memory_limit_gb is not None:
        limit = args.memory_limit_gb * 2**30
    elif args.device == "cuda":
        limit = 0.8 * torch.cuda.get_device_properties(0).total_memory
    else:
        import os

        limit = 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# losses: forward+backward, d={args.dim}, {args.per_class} per class, median of {args.repeats}"
          f"{' or more (~0.5 s of steps)' if args.device == 'cuda' else ''}, {device_name}, torch {torch.__version__}")
    print("# MB = peak memory growth of the step (CUDA allocator, or process RSS on the CPU); "
          "saved = bytes autograd keeps for backward")
    header = (f"{'loss':<13}{'B':>6} | {'pmlbal ms':>10}{'MB':>9}{'saved':>8} | {'PML ms':>10}{'MB':>9}{'saved':>8} | "
              f"{'speed-up':>9}{'mem ratio':>10}")
    print(header)
    print("-" * len(header))
    for name in args.cases.split(","):
        ours_expr, pml_expr = CASES[name]
        for batch in sizes:
            ours = run_case(ours_expr, batch, args)
            theirs = {"skipped": "no PML counterpart"} if pml_expr is None else None
            if theirs is None and name == "NTXent" and pml_ntxent_bytes(batch, args.per_class) > limit:
                theirs = {"skipped": f"est. {pml_ntxent_bytes(batch, args.per_class) / 2**30:.0f} GB"}
            if theirs is None:
                theirs = run_case(pml_expr, batch, args)
            print(_row(name, batch, ours, theirs), flush=True)


def _row(name, batch, ours, theirs) -> str:
    def cells(r):
        if "ms" in r:
            return f"{r['ms']:>10.1f}{r['peak_mb']:>9.0f}{r['saved_mb']:>8.0f}"
        return f"{(r.get('error') or r.get('skipped'))[:27]:>27}"

    ratio = ""
    if "ms" in ours and "ms" in theirs:
        mem = theirs["peak_mb"] / ours["peak_mb"] if ours["peak_mb"] > 1 else float("nan")
        ratio = f"{theirs['ms'] / ours['ms']:>8.1f}x{mem:>9.1f}x"
    return f"{name:<13}{batch:>6} | {cells(ours)} | {cells(theirs)} | {ratio}"


if __name__ == "__main__":
    main()
