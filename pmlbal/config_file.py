"""Run configurations in files: `pmlbal train --config FILE` and `--from-record RECORD.json`.

A configuration file is a YAML or JSON mapping with the keys of a run record's `config` (the fields
of `pmlbal.config.TrainConfig`); keys it leaves out take their usual defaults. For example::

    dataset: digits
    loss: BalancedNTXentLoss
    loss_kwargs: {temperature: 0.1, balance: 0.5}
    epochs: 8
    eval_split: val      # train_split follows (train-sub), as with the command-line flag
"""

from __future__ import annotations

import difflib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The checked configuration values in a YAML (.yaml, .yml) or JSON (.json) file.

    ValueError names the file and the problem: unreadable or not a mapping, an unknown key (with the
    closest known one), a value of the wrong type."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the configuration file ({err.strerror})") from None
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_loader())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML ({getattr(err, 'problem', None) or err}{where})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of configuration keys, got a {type(values).__name__}")
    return check_config_values(values, str(path))


def config_from_record(path: str | Path) -> dict[str, Any]:
    """The configuration a run record was trained with (its `config`), checked like a file's."""
    from .records import read_record

    return check_config_values(dict(read_record(path)["config"]), str(path))


def check_config_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` if every key is a TrainConfig field holding a value of its type; else ValueError naming
    `source`, the key and, for an unknown key, the closest known one. With `eval_split` but no
    `train_split`, the training split follows as it does for `--eval-split` (val: train-sub)."""
    from .config import TrainConfig, field_type_problem

    known = [f.name for f in fields(TrainConfig)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ValueError(f"{source}: unknown configuration key(s) " + ", ".join(map(_with_suggestion(known), unknown)))
    problem = field_type_problem(values)
    if problem:
        raise ValueError(f"{source}: {problem}")
    values = dict(values)
    if "eval_split" in values and "train_split" not in values:
        values["train_split"] = "train-sub" if values["eval_split"] == "val" else "train"
    return values


def _loader():
    """PyYAML's safe loader, reading `1e-3` as a number: YAML 1.1 wants `1.0e-3` and PyYAML would
    return the string '1e-3', yet that is how learning rates are written."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^[-+]?(?:
        [0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$""", re.X), list("-+0123456789."))
    return Loader


def _with_suggestion(known: list[str]):
    def name(key: str) -> str:
        close = difflib.get_close_matches(str(key), known, n=1)
        return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)

    return name
