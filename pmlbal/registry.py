"""One registry for pmlbal's losses, miners and samplers.

`create(name, **kwargs)` builds any registered component; `list_losses()`,
`list_miners()` and `list_samplers()` make the names discoverable. Registering
also makes each class reachable from PML's own modules
(`pytorch_metric_learning.losses.BalancedNTXentLoss`) and accepted by PML's
wrappers that check class names against a hard-coded list
(`SelfSupervisedLoss`, `CrossBatchMemory`).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

_KINDS = ("loss", "miner", "sampler")
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in _KINDS}


def register(kind: str) -> Callable[[T], T]:
    """Class decorator: record `cls` under its class name for `kind` and expose it in PML."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")

    def decorator(cls: T) -> T:
        _REGISTRY[kind][cls.__name__] = cls
        _inject_into_pml(kind, cls)
        return cls

    return decorator


def create(name: str, **kwargs: Any) -> Any:
    """Build the registered loss, miner or sampler called `name` with `kwargs`."""
    for kind in _KINDS:
        if name in _REGISTRY[kind]:
            return _REGISTRY[kind][name](**kwargs)
    known = ", ".join(sorted(n for kind in _KINDS for n in _REGISTRY[kind]))
    raise ValueError(f"unknown pmlbal component {name!r}; known names: {known}")


def get(name: str, kind: str | None = None) -> type:
    """Return the registered class called `name` (optionally restricted to one kind)."""
    kinds = _KINDS if kind is None else (kind,)
    for k in kinds:
        if name in _REGISTRY[k]:
            return _REGISTRY[k][name]
    known = ", ".join(sorted(n for k in kinds for n in _REGISTRY[k]))
    raise ValueError(f"unknown pmlbal {kind or 'component'} {name!r}; known names: {known}")


def list_losses() -> list[str]:
    return sorted(_REGISTRY["loss"])


def list_miners() -> list[str]:
    return sorted(_REGISTRY["miner"])


def list_samplers() -> list[str]:
    return sorted(_REGISTRY["sampler"])


def _inject_into_pml(kind: str, cls: type) -> None:
    if kind == "loss":
        from pytorch_metric_learning import losses as pml_losses

        setattr(pml_losses, cls.__name__, cls)
        # SelfSupervisedLoss and CrossBatchMemory refuse any class whose name is
        # not in their static list, so we extend the list rather than subclass them.
        for wrapper in (pml_losses.SelfSupervisedLoss, pml_losses.CrossBatchMemory):
            _extend_supported_losses(wrapper)
    elif kind == "miner":
        from pytorch_metric_learning import miners as pml_miners

        setattr(pml_miners, cls.__name__, cls)
    else:
        from pytorch_metric_learning import samplers as pml_samplers

        setattr(pml_samplers, cls.__name__, cls)


def _extend_supported_losses(wrapper: type) -> None:
    original = wrapper.supported_losses
    if getattr(original, "_pmlbal_extended", False):
        return

    def supported_losses() -> list[str]:
        return list(original()) + list_losses()

    supported_losses._pmlbal_extended = True  # type: ignore[attr-defined]
    wrapper.supported_losses = staticmethod(supported_losses)
