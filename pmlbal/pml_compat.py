"""Make pmlbal's losses, miners and samplers reachable the PML way.

`install()` puts every registered loss, miner and sampler into PML's own modules
(``pytorch_metric_learning.losses.BalancedNTXentLoss``) and extends the hard-coded class-name list
of the two PML wrappers that check it (`SelfSupervisedLoss`, `CrossBatchMemory`) with pmlbal's
losses. It is the only place pmlbal changes another package, called once by ``import pmlbal``
after every component has registered; calling it again installs what registered since.
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import samplers as pml_samplers

from . import registry

_MODULES = {"loss": pml_losses, "miner": pml_miners, "sampler": pml_samplers}


def install() -> None:
    """Expose every registered loss, miner and sampler in PML's module of its kind (under its
    class name) and have PML's class-name-checking wrappers accept pmlbal's losses."""
    for kind, module in _MODULES.items():
        for cls in registry.registered(kind).values():
            setattr(module, cls.__name__, cls)
    for wrapper in (pml_losses.SelfSupervisedLoss, pml_losses.CrossBatchMemory):
        _extend_supported_losses(wrapper)


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
