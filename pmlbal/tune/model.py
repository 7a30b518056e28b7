"""`StudySpec`: the one typed description of a tuning study, what every engine, worker and reader uses.

A study made by `pmlbal tune` stores it in its user attributes as plain JSON (`to_attrs`, the format
studies have always had); `from_attrs` reads it back, giving keys an older study lacks the values that
reproduce its behaviour, and refusing one that is not a study description. Readers ask its fields and
properties (`spec.search`, `spec.trials`, `spec.cd_settings()`), so a misspelt name is an
AttributeError, not a silent None, and each default is decided here once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..config import TrainConfig
from .dims import Dim

#: The fields a study's stored description must have; the others have defaults.
REQUIRED = ("loss", "dataset", "search", "budget", "metric", "dims", "base")


@dataclass(frozen=True)
class StudySpec:
    """A study's description: the loss tuned on `dataset`, the `search` and its `seed`, the `budget` in
    training runs, the validation `metric`, the search space `dims`, the `base` training configuration of a
    trial (a `TrainConfig`'s fields, without the per-machine ones), whether it ends with the confirm phase
    (`confirm`, always for cd), the search `version`, and the search's settings: the defaults `x0` (the
    first point and the pick's reference), the acceptance threshold `tol`, the noise floor `noise`, the
    `coupled` coordinates; `final_epochs` when the final run is longer than the validation runs."""

    loss: str
    dataset: str
    search: str
    budget: int
    metric: str
    dims: tuple[Dim, ...]
    base: Mapping[str, Any]
    seed: int = 0
    confirm: bool = False
    version: int = 1
    x0: Mapping[str, Any] | None = None
    tol: float = 0.0
    noise: float = 0.0
    coupled: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    final_epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", MappingProxyType(dict(self.base)))
        object.__setattr__(self, "dims", tuple(self.dims))

    @property
    def folds(self) -> int:
        """The validation folds a trial trains, one run each."""
        return int(self.base.get("val_folds") or 1)

    @property
    def trials(self) -> int:
        """Trials the budget buys: `budget` runs over `folds` (`budget.trial_budget` checks it at creation)."""
        return self.budget // self.folds

    def base_config(self, **overrides: Any) -> TrainConfig:
        """A trial's base configuration, with this machine's `overrides` (device, results folder, ...)."""
        return TrainConfig(**{**self.base, **overrides})

    def cd_settings(self) -> dict[str, Any]:
        """The search's settings as `CoordinateDescent`, its sampler and its Ray searcher take them."""
        return {"x0": None if self.x0 is None else dict(self.x0), "tol": self.tol, "noise": self.noise,
                "coupled": {k: tuple(v) for k, v in self.coupled.items()}}

    def to_attrs(self) -> dict[str, Any]:
        """The JSON a study stores (`pmlbal.tune.optuna.SPEC`); `final_epochs` only where it is set."""
        out = {"loss": self.loss, "dataset": self.dataset, "search": self.search, "budget": self.budget,
               "seed": self.seed, "metric": self.metric, "dims": [jsonable(asdict(d)) for d in self.dims],
               "base": jsonable(dict(self.base)), "confirm": self.confirm, "version": self.version,
               "x0": None if self.x0 is None else dict(self.x0), "tol": float(self.tol), "noise": float(self.noise),
               "coupled": {k: list(v) for k, v in self.coupled.items()}}
        if self.final_epochs is not None:
            out["final_epochs"] = self.final_epochs
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], name: str = "study") -> "StudySpec":
        """Read a stored description; ValueError naming the study and the missing keys for anything else."""
        if not isinstance(attrs, Mapping):
            raise ValueError(f"{name}: its description is {type(attrs).__name__}, not a mapping")
        missing = [k for k in REQUIRED if k not in attrs]
        if missing:
            raise ValueError(f"{name}: its description lacks {', '.join(missing)} (not made by `pmlbal tune`?)")
        dims = tuple(Dim(**{**d, "choices": tuple(d.get("choices", ()))}) for d in attrs["dims"])
        return cls(loss=attrs["loss"], dataset=attrs["dataset"], search=attrs["search"], budget=int(attrs["budget"]),
                   metric=attrs["metric"], dims=dims, base=dict(attrs["base"]), seed=int(attrs.get("seed") or 0),
                   confirm=bool(attrs.get("confirm")), version=int(attrs.get("version") or 1),
                   x0=attrs.get("x0"), tol=float(attrs.get("tol") or 0.0), noise=float(attrs.get("noise") or 0.0),
                   coupled={k: tuple(v) for k, v in (attrs.get("coupled") or {}).items()},
                   final_epochs=attrs.get("final_epochs"))


def jsonable(x: Any) -> Any:
    """`x` with tuples as lists, as JSON (and a study's stored attributes) hold them."""
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
