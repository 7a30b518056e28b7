"""A study's spec and a trial's configuration.

A study made by `pmlbal tune` carries its own description (the "spec": loss, data set, search
space, base training configuration, metric) in its user attributes; a resume must match it, and a
`pmlbal tune-worker` rebuilds the objective from it. `config_for` turns a trial's point into the
`TrainConfig` it trains.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping, Sequence

import optuna

from ..config import LOCAL, TrainConfig
from .dims import Dim
from .model import StudySpec, jsonable
from .optuna import SPEC
from .plan import SEARCH_VERSION
from .spaces import samples_per_class


def make_spec(base: TrainConfig, loss: str, dims: Sequence[Dim], search: str, budget: int, seed: int = 0,
              metric: str = "recall@1", confirm: bool = False, final_epochs: int | None = None,
              x0: Mapping[str, Any] | None = None, tol: float = 0.0, noise: float = 0.0,
              coupled: Mapping[str, tuple[str, float]] | None = None) -> StudySpec:
    """A new study's description (`model.StudySpec`): what a worker needs to rebuild the objective, and what
    a resume must match. `final_epochs`: the final run's length when the validation runs (`base.epochs`) are
    shorter; `x0` the defaults (the first point and the pick's reference), `tol`, `noise` and `coupled` the
    search's settings (`pmlbal.tune.plan.SearchPlan`)."""
    return StudySpec(loss=loss, dataset=base.dataset, search=search, budget=budget, seed=seed, metric=metric,
                     dims=tuple(dims), base={k: v for k, v in asdict(base).items() if k not in _NOT_IN_SPEC},
                     confirm=bool(confirm or search == "cd"), version=SEARCH_VERSION,
                     x0=dict(x0) if x0 is not None else None, tol=float(tol), noise=float(noise),
                     coupled=dict(coupled or {}),
                     final_epochs=final_epochs if final_epochs is not None and final_epochs != base.epochs else None)


_SAME = ("loss", "dataset", "search", "metric", "dims", "base", "confirm", "version", "seed", "final_epochs", "x0",
         "tol", "noise", "coupled")


def open_study(storage: Any, name: str, spec: StudySpec | None = None,
               direction: str = "maximize", sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create `name`, or load it; a stored spec must agree with `spec` (else resuming would mix searches)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                    load_if_exists=True)
    except SQLAlchemyError as err:  # e.g. a read-only database file: before any trial, in one line
        raise ValueError(f"cannot create or open study {name!r}: {str(err.orig if getattr(err, 'orig', None) else err)}"
                         .splitlines()[0]) from None
    stored = study.user_attrs.get(SPEC)
    if spec is not None:
        spec = spec.to_attrs()
        if stored is None:
            study.set_user_attr(SPEC, spec)
        else:
            stored = _with_new_defaults(stored)
            diff = [_describe(k, stored.get(k), spec.get(k)) for k in _SAME if stored.get(k) != spec.get(k)]
            if diff:
                raise ValueError(f"study {name!r} was made with another {'; '.join(diff)}; "
                                 f"resume it with the same options or pick another --study")
            if stored.get("budget") != spec.get("budget"):
                study.set_user_attr(SPEC, {**stored, "budget": spec["budget"]})
    return study


def _with_new_defaults(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored spec as it reads today: TrainConfig fields added since the study was made take
    their defaults (which reproduce the old behaviour, as `train.identity` assumes), so a study
    made before e.g. `save_model` existed resumes with the same options."""
    out = dict(stored)
    if isinstance(out.get("base"), dict):
        defaults = jsonable(asdict(TrainConfig()))
        out["base"] = {**{k: v for k, v in defaults.items() if k not in _NOT_IN_SPEC}, **out["base"]}
    return out


_NOT_IN_SPEC = LOCAL  # each worker sets its own (`pmlbal.config.FIELD_ROLES`)


def _describe(key: str, stored: Any, now: Any) -> str:
    """Name what differs: for dicts the differing fields, else the two values."""
    if isinstance(stored, dict) and isinstance(now, dict):
        fields = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        parts = [f"{k}: {stored.get(k, 'absent')!r} then, {now.get(k, 'absent')!r} now" for k in fields]
        return f"{key} ({'; '.join(parts)})"
    if key == "version":
        then = "absent in the stored study: version 1" if stored is None else f"{stored!r} then"
        return f"search version ({then}, {now!r} now: docs/tuner.md, 'Versions')"
    if stored is None:
        return f"{key} (absent in the stored study: it predates it; now {now!r})"
    return f"{key} ({stored!r} then, {now!r} now)"


def load_spec(study: optuna.Study) -> StudySpec:
    """The description a `pmlbal tune` study stores, typed; ValueError for a study it did not make."""
    spec = study.user_attrs.get(SPEC)
    if spec is None:
        raise ValueError(f"study {study.study_name!r} was not made by `pmlbal tune` (no {SPEC} attribute)")
    return StudySpec.from_attrs(_with_new_defaults(spec), f"study {study.study_name!r}")


def config_for(base: TrainConfig, loss: str, params: Mapping[str, Any], dims: Sequence[Dim]) -> TrainConfig:
    """`base` with a trial's hyper-parameters: loss arguments, batch size (and m) and lr."""
    loss_names = {d.name for d in dims} - {"batch_size", "lr"}
    cfg = replace(base, loss=loss, loss_kwargs={**base.loss_kwargs, **{k: params[k] for k in sorted(loss_names)}},
                  batch_size=params.get("batch_size", base.batch_size), lr=params.get("lr", base.lr))
    if "batch_size" in params:
        cfg = replace(cfg, samples_per_class=samples_per_class(base.dataset, params["batch_size"]))
    return cfg
