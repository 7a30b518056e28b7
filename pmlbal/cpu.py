"""Which CPU computed a run: the fingerprint that decides whether two machines round alike.

Two CPU runs of one configuration and seed are bit-identical only when the same kernels run in the
same order. What picks the kernels: the vendor and model (MKL takes other code paths on AMD than on
Intel), the instruction sets torch and oneDNN dispatch on (AVX2, AVX-512, AMX), the cache sizes
(oneDNN and MKL block their loops by them), the BLAS and oneDNN builds inside torch, and the thread
count. `fingerprint` records all of them; `same_rounding` compares two fingerprints on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from typing import Any

import torch

#: CPU flags (as /proc/cpuinfo spells them) that change which vector kernels run.
ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
#: The fields that decide rounding (everything but the free-text summary).
ROUNDING_FIELDS = ("vendor", "model", "family", "model_id", "stepping", "isa", "capability", "caches",
                   "blas", "onednn", "torch", "threads")


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """The CPU that computes here: vendor, model name and numbers, the vector ISA flags, torch's CPU
    capability, the cache sizes, the BLAS and oneDNN builds of torch, torch's version, the thread count
    (`threads`, default `torch.get_num_threads()`), and `id`, a short digest of those fields."""
    info = _cpuinfo()
    fp: dict[str, Any] = {
        "vendor": info.get("vendor_id", platform.machine()),
        "model": info.get("model name", platform.processor() or platform.machine()),
        "family": _int(info.get("cpu family")), "model_id": _int(info.get("model")),
        "stepping": _int(info.get("stepping")),
        "isa": [f for f in ISA_FLAGS if f in info.get("flags", "").split()],
        "capability": torch.backends.cpu.get_cpu_capability(),
        "caches": _caches(),
        **_builds(),
        "torch": torch.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
    }
    fp["id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    """A 10-hex digest of the rounding fields: equal ids, same rounding."""
    blob = json.dumps({k: fp.get(k) for k in ROUNDING_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def same_rounding(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two fingerprints promise bit-identical CPU runs (False when either is unknown)."""
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in ROUNDING_FIELDS)


def summary(fp: dict[str, Any] | None) -> str:
    """One line for a board: 'AMD EPYC (family 25 model 1; AVX2; MKL 2024.2, oneDNN v3.12.0; 1 thread)'."""
    if not fp:
        return "not recorded"
    t = fp.get("threads")
    return (f"{fp.get('model')} (family {fp.get('family')} model {fp.get('model_id')}; {fp.get('capability')}; "
            f"{fp.get('blas')}, oneDNN {fp.get('onednn')}; {t} thread{'s' if t != 1 else ''})")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _caches() -> dict[str, str]:
    """Cache sizes of CPU 0 by level and type ('L1d': '32K', 'L2': '512K', ...) from sysfs."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    out = {}
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return out
    for name in names:
        try:
            def read(field, name=name):
                with open(os.path.join(base, name, field)) as f:
                    return f.read().strip()
            kind = {"Data": "d", "Instruction": "i"}.get(read("type"), "")
            out[f"L{read('level')}{kind}"] = read("size")
        except OSError:
            continue
    return out


def _builds() -> dict[str, str | None]:
    """The BLAS and oneDNN that torch was built with, from `torch.__config__.show()`."""
    text = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", text)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", text)
    onednn = re.search(r"MKL-DNN (v[\w.]+)", text)
    name = blas.group(1) if blas else None
    if name == "mkl" and mkl:
        name = f"MKL {mkl.group(1)}"
    return {"blas": name, "onednn": onednn.group(1) if onednn else None}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
