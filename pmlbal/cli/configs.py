"""The `TrainConfig` a command's options describe, with a configuration file's values under the flags given."""

from __future__ import annotations

import click

#: TrainConfig fields a flag sets, where they are not the flag's own name.
FLAG_FIELDS = {"eval_split": ("eval_split", "train_split"), "compile_": ("compile",), "loss": ("loss", "loss_kwargs"),
               "freeze_bn_stats": ("freeze_bn",)}
#: Keys a configuration file cannot give `bench` and `sweep`: they have their own options for them.
NOT_SHARED = {"loss": "--losses / --loss", "loss_kwargs": "--losses / --loss", "seed": "--seeds",
              "tuned_from": "bench --config tuned", "tuned_runs": "bench --config tuned",
              "tuned_by": "bench --config tuned"}


def base_config(**kw):
    """The TrainConfig the shared options describe: the data set's (or --protocol's) values, then
    every option given (None: not given; 'none': unset)."""
    from dataclasses import fields

    from ..command import implied_train_split
    from ..config import TrainConfig
    from ..protocols import protocol_values

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in kw.items() if k in names and v is not None}
    given["compile"] = kw["compile_"]
    if kw.get("freeze_bn_stats"):
        if kw.get("freeze_bn") is not None:
            raise click.UsageError("--freeze-bn-stats conflicts with --freeze-bn/--no-freeze-bn: give one of them")
        given["freeze_bn"] = "stats"
    given["train_split"] = kw.get("train_split") or implied_train_split(kw["eval_split"])
    values = protocol_values(kw["protocol"], kw["dataset"]) if kw.get("protocol") else {}
    values.update({k: None if v == "none" else v for k, v in given.items()})
    return TrainConfig(**values)


def given_fields(ctx: click.Context) -> set[str]:
    """TrainConfig fields set by flags the user gave (on the command line or through the environment)."""
    from click.core import ParameterSource

    given = set()
    for param in ctx.params:
        if ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given.update(FLAG_FIELDS.get(param, (param,)))
    return given


def with_file(ctx: click.Context, flags, values: dict | None):
    """The configuration of `values` (a file's or a record's), with every flag the user gave on top."""
    from dataclasses import asdict

    from ..config import TrainConfig
    from ..protocols import protocol_values

    if values is None:
        return flags
    given = given_fields(ctx) & set(asdict(flags))
    if "protocol" in given and flags.protocol:  # --protocol on the command line brings its values over the file's
        given |= set(protocol_values(flags.protocol, flags.dataset))
    elif values.get("protocol"):  # a file naming a preset: its values, then the file's own
        values = {**protocol_values(values["protocol"], values.get("dataset", flags.dataset)), **values}
    return TrainConfig(**{**values, **{f: getattr(flags, f) for f in given}})


def shared_file(path: str | None, command: str) -> dict | None:
    """A configuration file's values for `bench`/`sweep`: the options every run of theirs shares."""
    from ..config_file import read_config_file

    if path is None:
        return None
    values = read_config_file(path)
    for key in values:
        if key in NOT_SHARED:
            raise ValueError(f"{path}: {key} is not a shared option of `pmlbal {command}` (use {NOT_SHARED[key]})")
    return values
