"""One registry for everything pmlbal knows by name: losses, miners, samplers, training batch
sources and data sets.

What is known about a thing travels with it (as a timm model's ``pretrained_cfg`` does): a loss
registers its tuning ranges, a data set its loader, standard Ks, training defaults, tuning ranges
and m rule. The trainer, tuner, leaderboard and CLI only read this module, so a new data set or
loss is one file and one decorator.

`create(name, **kwargs)` builds any registered component, and also any of PML's own losses (the
baselines the CLI accepts); `list_losses()`, `list_miners()`, `list_samplers()`, `list_datasets()`
make the names discoverable. The tables fill lazily: ``import pmlbal`` names, per kind, the modules
that register it (`add_loader`), and the first lookup of a kind imports them, so that a command that
only parses its options (``pmlbal --help``) never starts torch. Registering tells the listeners
(`add_listener`): that is how `pmlbal.pml_compat` puts pmlbal's classes into PML's own modules.
Registering a name twice warns when it is the same class again (a module imported twice) and
raises when it is a different class (two components would answer to one name).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T", bound=type)

_KINDS = ("loss", "miner", "sampler", "batches")
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in _KINDS}
#: Tuning ranges per loss name: {coordinate: (scale, low, high[, step, min_step])}; PML baselines too.
_LOSS_TUNING: dict[str, dict[str, tuple]] = {}
_DATASETS: dict[str, "DatasetSpec"] = {}
#: Per kind, the callables that import the modules registering it; each runs once, at the kind's first lookup.
_LOADERS: dict[str, list[Callable[[], Any]]] = {kind: [] for kind in (*_KINDS, "dataset")}
#: Called as ``listener(kind, name, cls)`` after each registration of a loss, miner, sampler or batch source.
_LISTENERS: list[Callable[[str, str, type], None]] = []


def add_loader(kinds: tuple[str, ...], load: Callable[[], Any]) -> None:
    """Run `load` (which imports the modules that register `kinds`) before the first lookup of any of them."""
    for kind in kinds:
        if kind not in _LOADERS:
            raise ValueError(f"kind must be one of {tuple(_LOADERS)}, got {kind!r}")
        _LOADERS[kind].append(load)


def add_listener(listener: Callable[[str, str, type], None]) -> None:
    """Call ``listener(kind, name, cls)`` after every later registration of a class."""
    _LISTENERS.append(listener)


def _loaded(*kinds: str) -> None:
    # A loader leaves its list before it runs: the modules it imports may look names up themselves
    # (a partly imported module is then what they see, as in any circular import). One that fails
    # goes back, so the next lookup tries again and shows the same error.
    for kind in kinds:
        while _LOADERS[kind]:
            load = _LOADERS[kind].pop(0)
            try:
                load()
            except BaseException:
                _LOADERS[kind].insert(0, load)
                raise


# -- losses, miners, samplers, batch sources ----------------------------------------------------------
def register(kind: str, name: str | None = None, *, tune: Mapping[str, tuple] | None = None) -> Callable[[T], T]:
    """Class decorator: record `cls` under `name` (default: its class name) for `kind`.

    `tune` (losses only) is the
    default search space of the loss's own arguments: ``{"temperature": ("log", 1/64, 1.0)}``
    (scales as `pmlbal.tune.Dim`; an optional 4th and 5th entry are the initial and minimum step).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if tune is not None and kind != "loss":
        raise ValueError("tune= is for losses")

    def decorator(cls: T) -> T:
        key = name or cls.__name__
        _check_new_name(f"{kind} {key!r}", _REGISTRY[kind].get(key), cls)
        _REGISTRY[kind][key] = cls
        if tune is not None:
            _LOSS_TUNING[key] = dict(tune)
        for listener in _LISTENERS:
            listener(kind, key, cls)
        return cls

    return decorator


def _check_new_name(what: str, old: type | None, new: type) -> None:
    """A name answers to one class: the same class again (a module re-imported) only warns, as
    timm's `register_model` does; a different class under a taken name is an error."""
    if old is None:
        return
    if old is not new and (old.__module__, old.__qualname__) != (new.__module__, new.__qualname__):
        raise ValueError(f"{what} is already registered to {old.__module__}.{old.__qualname__}; "
                         f"cannot register {new.__module__}.{new.__qualname__} under the same name")
    warnings.warn(f"{what} registered twice ({new.__module__}.{new.__qualname__}); keeping the newer one",
                  stacklevel=3)


def register_pml_loss(name: str, *, tune: Mapping[str, tuple]) -> None:
    """A thin entry for one of PML's own losses (a baseline): its default search space."""
    _pml_loss_class(name)  # fail now on a name PML does not have
    _LOSS_TUNING[name] = dict(tune)


def _pml_loss_class(name: str) -> type | None:
    from pytorch_metric_learning import losses as pml_losses

    cls = getattr(pml_losses, name, None)
    if isinstance(cls, type) and issubclass(cls, pml_losses.BaseMetricLossFunction):
        return cls
    return None


def get(name: str, kind: str | None = None) -> type:
    """Return the class registered as `name` (optionally restricted to one kind). For kind "loss"
    (or no kind), any of PML's own loss classes is found too."""
    kinds = _KINDS if kind is None else (kind,)
    _loaded(*kinds)
    for k in kinds:
        if name in _REGISTRY[k]:
            return _REGISTRY[k][name]
    if "loss" in kinds and (cls := _pml_loss_class(name)) is not None:
        return cls
    known = ", ".join(sorted(n for k in kinds for n in _REGISTRY[k]))
    extra = "; or any PML loss class name" if "loss" in kinds else ""
    raise ValueError(f"unknown pmlbal {kind or 'component'} {name!r}; known names: {known}{extra}")


def create(name: str, **kwargs: Any) -> Any:
    """Build the registered loss, miner or sampler called `name` (or one of PML's losses) with
    `kwargs`; an argument the class does not take is a ValueError naming the call."""
    cls = get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:  # e.g. --loss-arg tmperature=0.1
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        accepted = accepted_arguments(cls)
        unknown = [k for k in kwargs if k not in accepted]
        if not unknown:
            raise ValueError(f"{name}({args}): {str(err).splitlines()[0]}") from None
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(accepted), n=1)
        raise ValueError(f"{name}({args}): unexpected keyword argument {unknown[0]!r}"
                         + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" ({name} takes {', '.join(sorted(accepted))})") from None


def accepted_arguments(cls: type) -> set[str]:
    """Keyword arguments `cls(...)` takes: its own and, where its `__init__` passes `**kwargs` on,
    those of its bases (PML's losses hand distance, reducer, ... to BaseMetricLossFunction)."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            break
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def list_losses(pml: bool = False) -> list[str]:
    """pmlbal's losses; with `pml`, also the PML baselines that have a registered search space."""
    _loaded("loss")
    names = set(_REGISTRY["loss"]) | ({n for n in _LOSS_TUNING if _pml_loss_class(n)} if pml else set())
    return sorted(names)


def list_miners() -> list[str]:
    _loaded("miner")
    return sorted(_REGISTRY["miner"])


def list_samplers() -> list[str]:
    _loaded("sampler")
    return sorted(_REGISTRY["sampler"])


def registered(kind: str) -> dict[str, type]:
    """A copy of the name -> class table of one kind (what `pmlbal.pml_compat` installs into PML)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    _loaded(kind)
    return dict(_REGISTRY[kind])


def list_batch_sources() -> list[str]:
    """Names `TrainConfig.sampler` (``pmlbal train --sampler``) accepts."""
    _loaded("batches")
    return sorted(_REGISTRY["batches"])


def loss_tuning(name: str) -> dict[str, tuple]:
    """The default search space of a loss's arguments; ValueError naming the losses that have one."""
    _loaded("loss")
    if name not in _LOSS_TUNING:
        raise ValueError(f"no default search space for {name!r}; known: {', '.join(sorted(_LOSS_TUNING))}")
    return dict(_LOSS_TUNING[name])


# -- data sets -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """Everything the harness knows about a data set.

    `cls` loads a split (`cls(root, split)`); `ks` are the literature's Recall@K; `defaults` fill the
    `TrainConfig` fields left at None (backbone, sizes, epochs, batch, m, lr, ...); `tune` is the
    search space of the training coordinates (``{"batch_size": ("log2-int", 32, 512), ...}``);
    `samples_per_class(batch_size)` is m for a tuned batch size on the tuning split (train-sub).
    `val_folds` is the tuner's default number of class-disjoint validation folds (1: the fixed
    split; `pmlbal.data.base.held_out_classes` says how folds are drawn); `val_noise` maps a validation
    metric to the measured s.d. of the paired difference of two runs (same seeds, two configurations),
    the tuner's noise floor (docs/tuner.md, "Noise"). `lead_metric` is the metric its
    leaderboard is sorted by and leads with (``"recall@<first k>"`` unless the data set says
    otherwise); `lead_reason` is the sentence the board prints to say why, when that is not Recall@1.
    """

    name: str
    cls: type
    ks: tuple[int, ...]
    defaults: Mapping[str, Any]
    tune: Mapping[str, tuple]
    samples_per_class: Callable[[int], int] = field(default=lambda batch_size: 4)
    needs_root: bool = True
    lead_metric: str = ""
    lead_reason: str = ""
    val_folds: int = 1
    val_noise: Mapping[str, float] = field(default_factory=dict)
    #: m for a tuned batch size on the full train split (None: `samples_per_class`).
    final_rule: Callable[[int], int] | None = None
    #: The two views' recipe of a self-supervised run (``--task ssl``; `pmlbal.data.views.RECIPES`).
    ssl_views: str = "crop-flip-jitter"

    def final_samples_per_class(self, batch_size: int) -> int:
        """m for a tuned batch size trained on the full train split (a tuned configuration's final
        run): `final_rule`, or the tuning rule where the data set registers none."""
        return (self.final_rule or self.samples_per_class)(batch_size)

    def __post_init__(self) -> None:
        if not self.ks:
            raise ValueError(f"data set {self.name!r}: ks must name at least one K")
        lead = self.lead_metric or f"recall@{self.ks[0]}"
        if lead not in self.metrics:
            raise ValueError(f"data set {self.name!r}: lead_metric {lead!r} is not one of {', '.join(self.metrics)}")
        if lead != f"recall@{self.ks[0]}" and not self.lead_reason:
            raise ValueError(f"data set {self.name!r}: lead_metric {lead!r} needs a lead_reason (the board says why)")
        object.__setattr__(self, "lead_metric", lead)
        if self.val_folds < 1:
            raise ValueError(f"data set {self.name!r}: val_folds must be >= 1, got {self.val_folds}")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The board's metric columns: Recall@K at the standard Ks, then MAP@R and R-precision."""
        return tuple(f"recall@{k}" for k in self.ks) + ("map_at_r", "r_precision")

    def load(self, root: Any = None, split: str = "train") -> Any:
        return self.cls(root, split)


def register_dataset(name: str, *, ks: tuple[int, ...], defaults: Mapping[str, Any], tune: Mapping[str, tuple],
                     samples_per_class: Callable[[int], int] | None = None, needs_root: bool = True,
                     lead_metric: str | None = None, lead_reason: str = "", val_folds: int = 1,
                     final_samples_per_class: Callable[[int], int] | None = None,
                     val_noise: Mapping[str, float] | None = None,
                     ssl_views: str = "crop-flip-jitter") -> Callable[[T], T]:
    """Class decorator for a `RetrievalDataset`: register it as `name` with its spec.

    `lead_metric` (default Recall@ks[0]) must be one of the board's metrics; any other lead needs
    a `lead_reason`, which the board prints (why Recall@1 is not the metric to read here).
    """

    def decorator(cls: T) -> T:
        if name in _DATASETS:
            _check_new_name(f"data set {name!r}", _DATASETS[name].cls, cls)
        _DATASETS[name] = DatasetSpec(name, cls, tuple(ks), MappingProxyType(dict(defaults)),
                                      MappingProxyType(dict(tune)), samples_per_class or (lambda batch_size: 4),
                                      needs_root, lead_metric or "", lead_reason, val_folds,
                                      MappingProxyType(dict(val_noise or {})), final_samples_per_class, ssl_views)
        return cls

    return decorator


def classes_per_batch(p: int) -> Callable[[int], int]:
    """A samples-per-class rule that keeps `p` classes a batch as nearly as the batch allows: m is
    the divisor (>= 2) of the batch size nearest batch / p."""

    def rule(batch_size: int) -> int:
        divisors = [m for m in range(2, batch_size + 1) if batch_size % m == 0]
        if not divisors:
            raise ValueError(f"batch size {batch_size} has no divisor m >= 2 (samples per class)")
        return min(divisors, key=lambda m: (abs(m - batch_size / p), m))

    return rule


def dataset_spec(name: str) -> DatasetSpec:
    _loaded("dataset")
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(_DATASETS)}")
    return _DATASETS[name]


def list_datasets() -> list[str]:
    _loaded("dataset")
    return sorted(_DATASETS)


class RegistryView(Mapping):
    """A read-only mapping computed from the registry on each access (for names that used to be
    tables, e.g. `pmlbal.metrics.STANDARD_KS`), so it always shows every registered data set."""

    def __init__(self, keys: Callable[[], list[str]], value: Callable[[str], Any]) -> None:
        self._keys, self._value = keys, value

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return self._value(key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return repr(dict(self))
