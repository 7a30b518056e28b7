"""The configuration of one training run: `TrainConfig`, its validation, and the roles of its fields.

`FIELD_ROLES` is the one table of what each field is to a run: part of its identity (what defines
the experiment: data, model, loss, optimisation, schedule, seed), provenance (where the values or
the data came from: in the identity, but no difference in what was computed), or bookkeeping (where
and how it ran: never in the identity); whether it only shapes training (not the untrained network
or how it is evaluated); whether the reproducible command line carries it; whether each machine sets
it for itself. The run key (`identity`, `pmlbal.records.config_key`), the untrained memo's key
(`pmlbal.untrained.TRAINING_ONLY`), the board's grouping of untrained rows, the plots' labels, the
tuner's study spec and the reproducible command (`pmlbal.command`) are derived from it.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from .data.base import fold_split
from .data.cache import CACHE_MODES
from .models import HEAD_INITS, POOLINGS, check_backbone_name
from .optim import OPTIMIZERS, SCHEDULES
from .protocols import get_protocol, protocol_values
from .registry import RegistryView, dataset_spec, list_batch_sources, list_datasets

#: Per-data-set training defaults: a view of what each data set registers (`pmlbal.registry`).
DATASET_DEFAULTS = RegistryView(list_datasets, lambda name: dict(dataset_spec(name).defaults))


EVAL_ON = ("head", "backbone")
#: metric: class labels train the model (deep metric learning); ssl: two augmented views of each image
#: do, and labels only evaluate it (self-supervised learning, `pmlbal.ssl`).
TASKS = ("metric", "ssl")
LEAD_METRICS = ("recall@1", "map_at_r", "r_precision", "precision_at_1")


#: BatchNorm in the backbone: False trains it as usual; True keeps its statistics and affine
#: parameters fixed (Proxy-Anchor's practice); "stats" keeps only its statistics fixed, in eval
#: mode, while the affine parameters train (PML's trainer `freeze_trunk_batchnorm`, used by MLRC,
#: and Roth et al.'s frozen-normalisation ResNet).
FREEZE_BN = (False, True, "stats")

@dataclass
class TrainConfig:
    """Everything one run depends on. `None` fields take the data set's defaults."""

    dataset: str = "digits"
    loss: str = "BalancedNTXentLoss"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    backbone: str | None = None
    embedding_dim: int | None = None
    pretrained: str | None = None
    freeze_bn: bool | str = False
    epochs: int | None = None
    batch_size: int | None = None
    samples_per_class: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    cache_size: int | None = None
    input_size: int | None = None
    crop_scale: float | None = None
    #: Random horizontal flips of training crops (None: the data set's default, True unless it says
    #: otherwise; glyphs are not flipped).
    hflip: bool | None = None
    train_split: str = "train"
    eval_split: str = "test"
    eval_every: int = 0
    sampler: str = "m-per-class"
    resample_every: int = 1
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    results_dir: str = "results"
    cache_dir: str | None = None
    progress: bool = True
    #: "storage-url#study" when the hyper-parameters come from a tuning study (provenance only).
    tuned_from: str | None = None
    #: Validation runs behind the tuned pick (docs/tuner.md: its score is their mean).
    tuned_runs: int | None = None
    #: How the pick was found: the search and its validation folds ("cd on 3 folds"; provenance only).
    tuned_by: str | None = None
    #: Also save the trained model (weights + this config) to DIR/models/<run_id>.pt, for `pmlbal eval`.
    save_model: bool = False
    # Recipe options (published protocols, `pmlbal.protocols`); each default is the harness as it was,
    # so records made before they existed keep their identity.
    #: The preset the values came from (`pmlbal.protocols`): provenance, shown on the board.
    protocol: str | None = None
    #: avg | max | avg+max (GAP + GMP summed, Proxy-Anchor) of the backbone's last feature map.
    pooling: str = "avg"
    #: default | kaiming (Proxy-Anchor's embedding initialisation).
    head_init: str = "default"
    #: The embedding head's learning rate (None: `lr`).
    head_lr: float | None = None
    #: The loss's own parameters' learning rate, e.g. proxies (None: `pmlbal.optim.LOSS_LR_FACTOR` x `lr`).
    loss_lr: float | None = None
    optimizer: str = "adamw"
    schedule: str = "cosine"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    #: The first N epochs train only the head and the loss's parameters (Proxy-Anchor's --warm).
    freeze_trunk_epochs: int = 0
    #: Clip every gradient element to [-v, v] before the step (None: no clipping).
    clip_grad_value: float | None = None
    #: Training cache: square (centre square, as before) | aspect (whole image, `pmlbal.data.cache`).
    cache_mode: str = "square"
    #: Evaluate the head's embeddings or the pooled backbone output before the head (a self-supervised
    #: run evaluates the backbone, as its literature does).
    eval_on: str = "head"
    #: k > 1: k models on class-disjoint folds of the train classes, each leaving one fold out;
    #: test embeddings are the k models' concatenated (MLRC).
    cv_folds: int = 0
    #: The metric that picks the best epoch (the board reports the final one first).
    lead_metric: str = "recall@1"
    #: K > 1: validate on fold `val_fold` of K class-disjoint validation folds of the train classes
    #: (`pmlbal.data.base.held_out_classes`; eval_split val, train_split train-sub); 1: the fixed split.
    val_folds: int = 1
    val_fold: int = 0
    #: `TASKS`: metric (labels train) or ssl (two views of each image train; labels only evaluate).
    task: str = "metric"
    #: ssl: the two views' recipe (`pmlbal.data.views.RECIPES`; None: the data set's).
    views: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Any change of a field makes a resolved configuration one to check again.
        object.__setattr__(self, "_is_resolved", False)
        object.__setattr__(self, name, value)

    def resolved(self) -> "TrainConfig":
        """A copy with data-set defaults filled in and every value checked; a configuration that
        came out of `resolved()` (and was not changed since) is returned as it is."""
        if self.__dict__.get("_is_resolved"):
            return self
        spec = dataset_spec(self.dataset)  # ValueError naming the known data sets
        values = asdict(self)
        fill_defaults(values, spec.defaults)
        resolve_task(values, spec.ssl_views)
        if self.samples_per_class is None and self.train_split == "train-sub":
            # train-sub holds fewer classes than train (3 of 5 on digits and Fashion-MNIST), too few
            # for the default batch's P classes: take m from the data set's tuning rule instead.
            values["samples_per_class"] = spec.samples_per_class(values["batch_size"])
        cfg = TrainConfig(**values)
        for name in ("epochs", "batch_size", "samples_per_class", "embedding_dim", "cache_size", "input_size"):
            if int(getattr(cfg, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.samples_per_class < 2 and cfg.task == "metric":
            raise ValueError(f"samples_per_class must be >= 2 (positives are needed), got {cfg.samples_per_class}")
        if cfg.batch_size % cfg.samples_per_class:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) must be a multiple of samples_per_class ({cfg.samples_per_class})"
            )
        if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
        if cfg.input_size > cfg.cache_size:
            raise ValueError(f"input_size ({cfg.input_size}) cannot exceed cache_size ({cfg.cache_size})")
        if cfg.sampler not in list_batch_sources():
            raise ValueError(f"sampler must be one of {', '.join(list_batch_sources())}, got {cfg.sampler!r}")
        if cfg.resample_every < 1:
            raise ValueError(f"resample_every must be >= 1, got {cfg.resample_every}")
        if cfg.task == "metric" and (cfg.train_split not in ("train", "train-sub") or cfg.eval_split not in ("val", "test")):
            raise ValueError("train_split must be train|train-sub and eval_split val|test")
        cfg._check_recipe()
        object.__setattr__(cfg, "_is_resolved", True)
        return cfg

    def _check_recipe(self) -> None:
        check_backbone_name(self.backbone)
        choices = {"pooling": POOLINGS, "head_init": HEAD_INITS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "cache_mode": CACHE_MODES, "eval_on": EVAL_ON, "lead_metric": LEAD_METRICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.freeze_bn not in FREEZE_BN:
            raise ValueError(f"freeze_bn must be true, false or 'stats', got {self.freeze_bn!r}")
        if self.protocol is not None:
            get_protocol(self.protocol)
        for name in ("head_lr", "loss_lr", "clip_grad_value"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.freeze_trunk_epochs < 0:
            raise ValueError(f"weight_decay, warmup_epochs and freeze_trunk_epochs must be >= 0, got "
                             f"{self.weight_decay}, {self.warmup_epochs}, {self.freeze_trunk_epochs}")
        if self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_step_epochs must be >= 1 and lr_gamma in (0, 1], got {self.lr_step_epochs}, "
                             f"{self.lr_gamma}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(f"cv_folds must be 0 (off) or >= 2, got {self.cv_folds}")
        if self.cv_folds and self.save_model:
            raise ValueError("save_model keeps one model; a cv_folds run trains several")
        self._check_val_folds()

    def _check_val_folds(self) -> None:
        if self.val_folds < 1 or not 0 <= self.val_fold < self.val_folds:
            raise ValueError(f"val_folds must be >= 1 and val_fold in 0..val_folds-1, got val_folds={self.val_folds}, "
                             f"val_fold={self.val_fold}")
        if self.val_folds > 1 and (self.eval_split, self.train_split) != ("val", "train-sub"):
            raise ValueError(f"validation folds divide the train classes: they need eval_split val (and train_split "
                             f"train-sub), got {self.eval_split}")
        if self.val_folds > 1 and self.cv_folds:
            raise ValueError("val_folds and cv_folds both divide the train classes: use one of them")


def resolve_task(values: dict[str, Any], dataset_views: str) -> None:
    """The task's own defaults and limits. metric: the head is evaluated, no views. ssl: the classification
    protocol's splits (cls-train, cls-test: every class in both), random batches of single images (each
    image and its second view are a class: m = 1), the backbone evaluated, the data set's view recipe."""
    from .data.views import RECIPES

    task = values["task"]
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "metric":
        if values["views"] is not None:
            raise ValueError("views are for --task ssl (two augmented views of each image)")
        return
    values["eval_on"] = "backbone"  # the projection head is the loss's; the features are the backbone's
    values["views"] = values["views"] or dataset_views
    if values["views"] not in RECIPES:
        raise ValueError(f"views must be one of {', '.join(RECIPES)}, got {values['views']!r}")
    values["train_split"] = "cls-train" if values["train_split"] == "train" else values["train_split"]
    values["eval_split"] = "cls-test" if values["eval_split"] == "test" else values["eval_split"]
    if (values["train_split"], values["eval_split"]) != ("cls-train", "cls-test"):
        raise ValueError(f"--task ssl trains on cls-train and evaluates on cls-test (every class in both), got "
                         f"{values['train_split']} and {values['eval_split']}")
    values["sampler"] = "random" if values["sampler"] == "m-per-class" else values["sampler"]
    if values["sampler"] != "random":
        raise ValueError(f"--task ssl draws random batches; --sampler {values['sampler']} is not built for it "
                         "(its self-supervised form chooses batches from the two views' embeddings)")
    if values["cv_folds"] or values["val_folds"] > 1:
        raise ValueError("--task ssl evaluates on the classification protocol: no cv_folds or val_folds")
    values["samples_per_class"] = 1


def fill_defaults(values: dict[str, Any], dataset_defaults: Mapping[str, Any]) -> None:
    """Fill the config fields left at None in `values`: the data set's defaults, then the harness's."""
    for k, v in dataset_defaults.items():
        if values.get(k) is None:
            values[k] = v
    if values.get("hflip") is None:
        values["hflip"] = True


# -- field roles ----------------------------------------------------------------------------------------
_UNSET = object()


@dataclass(frozen=True)
class FieldRole:
    """What one `TrainConfig` field is to a run.

    `role`: "identity" (defines the experiment), "provenance" (where values or data came from: in
    the run key, no difference in what was computed) or "bookkeeping" (where and how it ran: never
    in the key). `training_only`: shapes training only, not the untrained network or its evaluation.
    `in_command`: a flag of the generic part of the reproducible command. `local`: bookkeeping each
    machine sets for itself (a tuning worker's own device and folders, not the study's).
    `neutral`: for a field added after records existed, the value every earlier run had: left out
    of the key at that value (as the default is), so earlier records keep their key.
    """

    role: str
    training_only: bool = False
    in_command: bool = True
    local: bool = False
    neutral: Any = _UNSET


_I, _T = FieldRole("identity"), FieldRole("identity", training_only=True)
_P, _PX = FieldRole("provenance"), FieldRole("provenance", in_command=False)
_B, _BX, _BL = FieldRole("bookkeeping"), FieldRole("bookkeeping", in_command=False), FieldRole("bookkeeping", local=True)
_BLX = FieldRole("bookkeeping", in_command=False, local=True)

#: The role of every `TrainConfig` field (checked complete at import).
FIELD_ROLES: Mapping[str, FieldRole] = {
    # the data, and how it is evaluated
    "dataset": FieldRole("identity", in_command=False),  # the command's first flags
    "root": _P, "cache_size": _I, "input_size": _I, "eval_split": _I,
    "eval_on": _I,
    # the network
    "backbone": _I, "embedding_dim": _I, "pretrained": _I, "freeze_bn": _I, "pooling": _I, "head_init": _I,
    # the loss, optimisation and schedule: training only
    "loss": FieldRole("identity", training_only=True, in_command=False),
    "loss_kwargs": FieldRole("identity", training_only=True, in_command=False),
    "seed": _T, "epochs": _T, "batch_size": _T, "samples_per_class": _T, "lr": _T, "weight_decay": _T,
    "warmup_epochs": _T, "crop_scale": _T, "hflip": FieldRole("identity", training_only=True, neutral=True),
    "train_split": _T, "eval_every": _T, "sampler": _T, "resample_every": _T, "head_lr": _T, "loss_lr": _T,
    "optimizer": _T, "schedule": _T, "lr_step_epochs": _T, "lr_gamma": _T, "freeze_trunk_epochs": _T,
    "clip_grad_value": _T, "cache_mode": _T, "cv_folds": _T, "lead_metric": _T,
    # which validation fold (the classes evaluated on, and those trained on)
    "val_folds": _I, "val_fold": _I, "task": _I, "views": _T,
    # where the values came from
    "tuned_from": _PX, "tuned_runs": _PX, "tuned_by": _PX, "protocol": _PX,
    # where and how it ran
    "device": _BL, "compile": _B, "save_model": _BX, "progress": _BLX, "results_dir": _BLX, "cache_dir": _BLX,
}
if set(FIELD_ROLES) != {f.name for f in fields(TrainConfig)}:  # a new field must say what it is
    raise RuntimeError(f"FIELD_ROLES and TrainConfig disagree on {set(FIELD_ROLES) ^ {f.name for f in fields(TrainConfig)}}")

#: Fields of the run key (identity and provenance), and those always written in it.
KEY_FIELDS = tuple(k for k, r in FIELD_ROLES.items() if r.role != "bookkeeping")
ALWAYS_IN_KEY = ("dataset", "loss", "loss_kwargs", "seed")
#: Where and how a run ran: never part of its key.
BOOKKEEPING = tuple(k for k, r in FIELD_ROLES.items() if r.role == "bookkeeping")
#: Fields that say nothing about what a run computed: bookkeeping, provenance and the seed.
NOT_COMPUTED = frozenset({"seed"} | {k for k, r in FIELD_ROLES.items() if r.role != "identity"})
#: Fields that only shape training, never the evaluation of a given network (bookkeeping and
#: provenance included: they change nothing computed).
TRAINING_ONLY = frozenset(k for k, r in FIELD_ROLES.items() if r.training_only or r.role != "identity")
#: Bookkeeping each machine sets for itself (not part of a tuning study's description).
LOCAL = tuple(k for k, r in FIELD_ROLES.items() if r.local)
#: Fields the reproducible command leaves to its first flags or does not carry.
NOT_IN_COMMAND = tuple(k for k, r in FIELD_ROLES.items() if not r.in_command)
#: Fields added after records existed whose value here is what every earlier run did: left out of
#: the identity at that value, so earlier records keep their key.
IDENTITY_NEUTRAL = {k: r.neutral for k, r in FIELD_ROLES.items() if r.neutral is not _UNSET}
DEFAULTS = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}


def at_default(name: str, value: Any) -> bool:
    """Whether `value` of field `name` is what a run has when it does not set it (its default, or
    the neutral value of a field added later). Unknown names (fields of old records) are not."""
    if name not in DEFAULTS:
        return False
    return value == DEFAULTS[name] or (name in IDENTITY_NEUTRAL and value == IDENTITY_NEUTRAL[name])


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that make a run distinct: the key fields off their default (so adding an option
    with a default keeps the identity, and the resumability, of earlier records); never bookkeeping,
    so ``--device cpu`` is the same run as the default."""
    return {k: v for k, v in asdict(cfg).items()
            if k in ALWAYS_IN_KEY or (k in KEY_FIELDS and not at_default(k, v))}


def field_type_problem(values: Mapping[str, Any]) -> str | None:
    """The first known `TrainConfig` field in `values` holding a value of another type (a config file's,
    a record's: "epochs must be an integer or null, got 'two'"), or None. Unknown keys are the caller's."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if key in hints and not _fits(value, hints[key]):
            return f"{key} must be {_describe(hints[key])}, got {value!r}"
    return None


def _fits(value: Any, hint: Any) -> bool:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:  # YAML and JSON write 1e-3 as a float but 1 as an int
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, origin)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        origin, getattr(origin, "__name__", str(origin)))


def data_splits(cfg: TrainConfig) -> tuple[str, str]:
    """The data sets' split names a run trains and evaluates on: `train_split` and `eval_split`, in
    validation fold `val_fold` of `val_folds` (``"train-sub@1of3"``, ``"val@1of3"``; one fold: as named)."""
    return (fold_split(cfg.train_split, cfg.val_folds, cfg.val_fold),
            fold_split(cfg.eval_split, cfg.val_folds, cfg.val_fold))


def protocol_config(name: str, dataset: str, **overrides: Any) -> TrainConfig:
    """A `TrainConfig` for `dataset` following preset `name` (`pmlbal.protocols`); `overrides` (any
    TrainConfig fields) take precedence over the preset's values."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"not TrainConfig fields: {', '.join(unknown)}")
    return replace(TrainConfig(dataset=dataset), **{**protocol_values(name, dataset), **overrides}, protocol=name)
