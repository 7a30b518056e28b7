"""Profiler tables for the benchmarks' --profile options."""

from __future__ import annotations

from typing import TextIO


def write_tables(prof, f: TextIO, device: str, row_limit: int) -> None:
    """`prof`'s operator table sorted by CPU time, and by device time on CUDA."""
    for key in ["self_cpu_time_total"] + (["self_device_time_total"] if device == "cuda" else []):
        try:
            f.write(prof.key_averages().table(sort_by=key, row_limit=row_limit) + "\n")
        except Exception as err:  # a profiler quirk must not cost the measurement
            f.write(f"# no table sorted by {key}: {err}\n")
