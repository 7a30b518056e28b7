"""pmlbal: balanced, fast, tuned contrastive losses for pytorch-metric-learning.

``import pmlbal`` is light: it tells the registry which modules register each kind of component
(`pmlbal.registry.add_loader`) and watches for PML's own modules (`pmlbal.pml_compat.watch`). The
first lookup of a kind (``pmlbal.create("BalancedNTXentLoss")``, ``pmlbal.list_datasets()``) or the
first touch of a sub-package (``pmlbal.losses``) imports what it needs, and once PML's ``losses``,
``miners`` or ``samplers`` is imported it holds pmlbal's classes of its kind
(``pytorch_metric_learning.losses.BalancedNTXentLoss``), whichever was imported first. So
``pmlbal --help`` starts neither torch nor PML.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import pml_compat as _pml_compat
from . import registry as _registry

__version__ = "0.1.0"

#: Which modules register each kind: imported at the kind's first lookup.
_COMPONENTS = {
    "dataset": ("pmlbal.data",),
    "loss": ("pmlbal.losses",),
    "miner": ("pmlbal.miners",),
    "sampler": ("pmlbal.samplers.osgd", "pmlbal.samplers.spectral"),
    "batches": ("pmlbal.samplers.batches",),
}
_SUBPACKAGES = ("data", "losses", "metrics", "miners", "samplers")
_REGISTRY_API = ("create", "get", "list_batch_sources", "list_datasets", "list_losses", "list_miners",
                 "list_samplers")

for _kind, _modules in _COMPONENTS.items():
    _registry.add_loader((_kind,), lambda modules=_modules: [importlib.import_module(m) for m in modules])
_pml_compat.watch()


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _REGISTRY_API:
        return getattr(_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES, *_REGISTRY_API])


__all__ = [*_REGISTRY_API, *_SUBPACKAGES, "__version__"]
