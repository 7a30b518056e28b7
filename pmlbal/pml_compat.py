"""Make pmlbal's losses, miners and samplers reachable the PML way.

Once ``import pmlbal`` has called `watch()`, each of PML's modules ``losses``, ``miners`` and
``samplers`` holds pmlbal's classes of its kind (``pytorch_metric_learning.losses.BalancedNTXentLoss``)
as soon as both are imported, in whichever order: a PML module imported earlier gets them at once, one
imported later gets them when its import ends (an import hook), and a class registered later is put in
by a registry listener. The class-name list of the two PML wrappers that check it (`SelfSupervisedLoss`,
`CrossBatchMemory`) is extended with pmlbal's losses. This is the only place pmlbal changes another
package. Nothing here imports PML or torch by itself: ``pmlbal --help`` starts neither.
"""

from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType

from . import registry

_MODULES = {"pytorch_metric_learning.losses": "loss", "pytorch_metric_learning.miners": "miner",
            "pytorch_metric_learning.samplers": "sampler"}
_KIND_MODULE = {kind: name for name, kind in _MODULES.items()}
#: Kinds whose PML module has finished importing and holds pmlbal's classes from then on.
_READY: set[str] = set()
#: PML modules of `_MODULES` being imported right now (one may import another: install after the outermost).
_DEPTH = 0
_WATCHING = False


def watch() -> None:
    """Install into PML's modules already imported, and into the others when they are (idempotent)."""
    global _WATCHING
    if not _WATCHING:
        registry.add_listener(_on_register)
        _WATCHING = True
    if not any(isinstance(finder, _AfterPMLImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterPMLImport())
    for name, kind in _MODULES.items():
        if name in sys.modules and kind not in _READY:
            _install(kind)


def install() -> None:
    """Import PML's three modules now and install every registered class into them."""
    import importlib

    watch()
    for name in _MODULES:
        importlib.import_module(name)


def _install(kind: str) -> None:
    _READY.add(kind)
    module = sys.modules[_KIND_MODULE[kind]]
    for cls in registry.registered(kind).values():  # imports pmlbal's modules of this kind
        setattr(module, cls.__name__, cls)
    if kind == "loss":
        for wrapper in (module.SelfSupervisedLoss, module.CrossBatchMemory):
            _extend_supported_losses(wrapper)


def _on_register(kind: str, name: str, cls: type) -> None:
    if kind in _READY:
        setattr(sys.modules[_KIND_MODULE[kind]], cls.__name__, cls)


class _AfterPMLImport(importlib.abc.MetaPathFinder):
    """Finds PML's `_MODULES` with the other finders and runs `_install` once the outermost of them is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenInstall(spec.loader, _MODULES[fullname])
                return spec
        return None


class _ThenInstall(importlib.abc.Loader):
    """A PML module's own loader, then the installation of pmlbal's classes of its kind."""

    def __init__(self, loader: importlib.abc.Loader, kind: str) -> None:
        self.loader, self.kind = loader, kind

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        global _DEPTH
        # The module keeps its real loader (inspect, pkgutil and reload read it).
        module.__loader__ = module.__spec__.loader = self.loader
        _DEPTH += 1
        try:
            self.loader.exec_module(module)
        finally:
            _DEPTH -= 1
        if _DEPTH == 0:
            for name, kind in _MODULES.items():
                if name in sys.modules and kind not in _READY:
                    _install(kind)


def _extend_supported_losses(wrapper: type) -> None:
    # SelfSupervisedLoss and CrossBatchMemory refuse any class whose name is not in their static
    # list, so we extend the list rather than subclass them. The list is read at call time, so a
    # loss registered later is accepted too.
    original = wrapper.supported_losses
    if getattr(original, "_pmlbal_extended", False):
        return

    def supported_losses() -> list[str]:
        return list(original()) + registry.list_losses()

    supported_losses._pmlbal_extended = True  # type: ignore[attr-defined]
    wrapper.supported_losses = staticmethod(supported_losses)
