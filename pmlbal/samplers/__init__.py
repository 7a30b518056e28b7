"""Batch samplers that choose which examples share a batch (docs/method.md, 'High-loss mini-batches'), and the training
batch sources built on them (`pmlbal train --sampler`).

The names below are imported on first use: `batches` (the sources' names, which ``pmlbal --help`` lists)
needs no torch, the samplers do.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"MPerClassBatches": "batches", "OSGDBatches": "batches", "SpectralBatches": "batches",
          "OSGDBatchSampler": "osgd", "SpectralBatchSampler": "spectral"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
