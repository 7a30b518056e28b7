"""Board rows and their statistics: one row per configuration (mean and std over its seeds), one
per untrained network, one per raw-pixel baseline; what both the leaderboard's tables and its
plots are built from."""

from __future__ import annotations

import math
import re
import shlex
from collections import defaultdict
from statistics import mean, stdev
from typing import Any

from .config import DEFAULTS, FIELD_ROLES, at_default
from .metrics.collapse import record_collapse
from .records import best_epoch, config_key, is_current
from .registry import dataset_spec

METRIC_LABELS = {"map_at_r": "MAP@R", "r_precision": "RP"}
#: Config fields that fix the untrained network and how it is evaluated (`pmlbal.config.FIELD_ROLES`:
#: identity, not training-only; the data set and the test split are the board's own): runs that share
#: them (and a seed) start from the same weights and are evaluated alike, whatever their loss, batch or
#: schedule. Those the data set fills are always in a group's key, the others when off their default
#: (as in a run's identity), so the key of a group of defaults stays what it was.
UNTRAINED_FIELDS = tuple(k for k, r in FIELD_ROLES.items()
                         if r.role == "identity" and not r.training_only and k not in ("dataset", "eval_split"))
UNTRAINED_KEYS = tuple(k for k in UNTRAINED_FIELDS if DEFAULTS[k] is None)
UNTRAINED = "untrained model"
PIXELS = "raw pixels"


#: Significant digits of a float in a board's label; the command and the CSV keep the exact value.
LABEL_DIGITS = 4


def _label_value(value: Any, digits: int | None) -> str:
    """`value` as a label shows it: a float with more than `digits` significant digits rounded to
    them (6.8831488149573685 -> 6.883), every other value as written (2.0, 0.0625, 'mean')."""
    if digits is None or not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    short = f"{value:.{digits}g}"
    return str(value) if float(short) == value else short


def loss_label(config: dict[str, Any], digits: int | None = LABEL_DIGITS) -> str:
    """The loss and its arguments, e.g. `BalancedNTXentLoss(balance=6.883, temperature=0.4219)`, with
    the protocol, a non-default sampler and the tuning that chose it; `digits=None` keeps exact floats."""
    kwargs = ", ".join(f"{k}={_label_value(v, digits)}" for k, v in sorted(config.get("loss_kwargs", {}).items()))
    label = f"{config['loss']}({kwargs})" if kwargs else config["loss"]
    if config.get("protocol"):
        label += f" [protocol {config['protocol']}]"
    if config.get("sampler", "m-per-class") != "m-per-class":  # two samplers of one loss are two rows apart
        every = config.get("resample_every", 1)
        label += f" [sampler {config['sampler']}" + (f", every {every} epochs" if every != 1 else "") + "]"
    if not config.get("tuned_from"):
        return label
    runs, by = config.get("tuned_runs"), config.get("tuned_by")
    tuned = f"tuned by {by}" if by else "tuned"
    return label + (f" [{tuned}, {runs} val run{'s' if runs != 1 else ''}]" if runs else f" [{tuned}]")


def board_command(record: dict[str, Any]) -> str:
    """The record's `pmlbal train` command without its seed, for a board row whose runs differ only in
    it (the board appends `--seed S`): each option once, as click would read the last one."""
    parts, out, i = shlex.split(record["command"]), [], 0
    while i < len(parts):
        if parts[i] == "--seed":
            i += 2
            continue
        if not parts[i].startswith("--seed="):
            out.append(parts[i])
        i += 1
    return shlex.join(out)


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("recall@", "R@"))


def board_metrics(dataset: str) -> list[str]:
    """The board's metric columns, the data set's lead metric first (`pmlbal.registry` declares it)."""
    spec = dataset_spec(dataset)
    return [spec.lead_metric] + [m for m in spec.metrics if m != spec.lead_metric]


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1: what a reader comparing two rows needs; the
    population s.d. understates it by sqrt(n / (n - 1)), 1.22 at 3 seeds); 0 for one value."""
    if not values:
        return math.nan, math.nan
    return mean(values), stdev(values) if len(values) > 1 else 0.0


def _test_records(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    # Validation-split runs are tuning trials (class-disjoint val, part of train): not results.
    return [r for r in records
            if r["config"]["dataset"] == dataset and r["config"].get("eval_split", "test") == "test"]


def current_first(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The runs of one row that the current code computed (`pmlbal.records.is_current`), and False;
    if none, all of them and True: the row is stale, from code of an earlier numerics version."""
    current = [r for r in runs if is_current(r)]
    return (current, False) if current else (runs, True)


def threads(record: dict[str, Any]) -> int | None:
    """The CPU thread count a run trained with (None on a GPU or where unknown): from its
    `numerics`, or for older records from the device line ("CPU (x86_64, 2 threads)")."""
    numerics = record.get("numerics")
    if isinstance(numerics, dict):
        return numerics.get("threads") if numerics.get("device") == "cpu" else None
    found = re.search(r"(\d+) threads", str(record.get("device", "")))
    return int(found.group(1)) if found else None


def device_kind(record: dict[str, Any]) -> str:
    """"cpu", "cuda", "mps", ... : the kind of device a run trained on, from its `numerics` or, for
    older records, its device line."""
    numerics = record.get("numerics")
    if isinstance(numerics, dict) and numerics.get("device"):
        return str(numerics["device"]).split(":")[0]
    device = str(record.get("device", "")).lower()  # "CPU (x86_64, 2 threads)" or a GPU's name
    if device.startswith("cpu") or not device:
        return "cpu"
    return "mps" if "mps" in device or "apple" in device else "cuda"


def untrained_rows(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One row per untrained network among the test-split records of `dataset`: the `initial`
    metrics (evaluated before the first step) of the runs sharing backbone, embedding size, input
    and weights, as mean and std over their seeds. Each seed counts once, however many losses were
    trained from it, so the spread is over initialisations, not over repeats of one."""
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in _test_records(records, dataset):
        if r.get("initial"):
            groups[_untrained_group(r["config"])][r["seed"]].append(r)
    rows = []
    for key, all_by_seed in groups.items():
        runs, stale = current_first([r for rs in all_by_seed.values() for r in rs])
        by_seed = defaultdict(list)
        for r in runs:
            by_seed[r["seed"]].append(r)
        cfg = runs[0]["config"]
        row = {
            "loss": UNTRAINED + ("" if cfg.get("pretrained") is None else f" (pretrained={cfg['pretrained']})"),
            "untrained": True, "seeds": len(by_seed), "stale": stale, "threads": _thread_set(runs),
            "cpus": _cpu_set(runs),
            "config_key": "untrained-" + config_key(dict(key)),
            "backbone": cfg["backbone"], "embedding_dim": cfg["embedding_dim"], "batch_size": None, "epochs": 0,
            "train_time_s": 0.0, "command": "", "device": next(iter(by_seed.values()))[0].get("device", "?"),
            "eval_split": "test",
        }
        for name in dataset_spec(dataset).metrics:
            # Runs of one seed start from the same weights: their initial values agree (on the CPU
            # exactly), so each seed contributes the mean of its runs' values once.
            per_seed = [mean(v) for runs in by_seed.values()
                        if (v := [r["initial"][name] for r in runs if name in r["initial"]])]
            row[name] = _stats(per_seed)
        rows.append(row)
    return rows


def _untrained_group(cfg: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The untrained network of a run's config, as sorted (field, value) pairs: `UNTRAINED_KEYS`
    always, the other `UNTRAINED_FIELDS` when set off their default (absent from older records)."""
    pairs = {k: str(cfg.get(k)) for k in UNTRAINED_KEYS}
    pairs.update({k: str(cfg[k]) for k in UNTRAINED_FIELDS if k in cfg and k not in pairs and not at_default(k, cfg[k])})
    return tuple(sorted(pairs.items()))


def pixel_rows(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One row per evaluation image size among the test-split records of `dataset` that carry the
    raw-pixel baseline (`pixels`: each evaluation image as one L2-normalised vector, searched as
    embeddings are). It has no network and no seed: one value, the same in every record."""
    groups: dict[str, dict[str, Any]] = {}
    for r in _test_records(records, dataset):
        if r.get("pixels"):
            groups.setdefault(str(r["config"].get("cache_size")), r)
    rows = []
    for size, r in sorted(groups.items()):
        row = {"loss": f"{PIXELS} ({size} px, L2-normalised)", "untrained": True, "pixels": True, "seeds": 1,
               "config_key": f"pixels-{size}", "stale": False, "threads": (), "cpus": {}, "backbone": "–", "embedding_dim": 3 * int(size) ** 2,
               "batch_size": None, "epochs": 0, "train_time_s": 0.0, "command": "", "device": r.get("device", "?"),
               "eval_split": "test"}
        for name in dataset_spec(dataset).metrics:
            if name in r["pixels"]:
                row[name] = _stats([r["pixels"][name]])
        rows.append(row)
    return rows


def build_rows(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One row per configuration evaluated on test (metrics as mean and std over its seeds) and one
    per untrained network (`untrained_rows`), sorted by the data set's lead metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in _test_records(records, dataset):
        # A row is homogeneous: its runs share the configuration, the device kind and the CPU thread
        # count (which decides the rounding); runs that differ in either form a row of their own.
        groups[(r["config_key"], device_kind(r), threads(r))].append(r)
    rows = []
    for (key, _, _), runs in groups.items():
        runs, stale = current_first(runs)
        # One run per seed (records written before runs were locked may repeat one): the latest.
        by_seed = {r["seed"]: r for r in sorted(runs, key=lambda r: str(r.get("created", "")))}
        runs = sorted(by_seed.values(), key=lambda r: r["seed"])
        cfg = runs[0]["config"]
        row = {
            "loss": loss_label(cfg), "loss_exact": loss_label(cfg, digits=None), "untrained": False, "config_key": key, "seeds": len(runs),
            "stale": stale, "threads": _thread_set(runs), "cpus": _cpu_set(runs),
            "backbone": cfg["backbone"], "embedding_dim": cfg["embedding_dim"], "batch_size": cfg["batch_size"],
            "epochs": cfg["epochs"], "train_time_s": mean(r.get("train_time_s") or 0.0 for r in runs),
            "command": board_command(runs[0]), "device": runs[0].get("device", "?"), "eval_split": cfg["eval_split"],
        }
        for name in dataset_spec(dataset).metrics:
            row[name] = _stats([r["final"][name] for r in runs if name in r["final"]])
        reasons = [record_collapse(r) for r in runs]
        if any(reasons):  # a failure that keeps its metrics: the board shows it apart
            row["collapsed"] = (sum(map(bool, reasons)), next(x for x in reasons if x))
        ranks = [r["final"]["effective_rank"] for r in runs if "effective_rank" in r["final"]]
        if len(ranks) == len(runs):  # the test embeddings' effective rank (dimensional collapse: low)
            row["effective_rank"] = _stats(ranks)
        best = [b for b in (_best(r) for r in runs) if b is not None]
        if best:  # runs evaluated every few epochs: the best epoch too, as papers that report it do
            k = dataset_spec(dataset).ks[0]
            vals = [b["metrics"][f"recall@{k}"] for b in best]
            row["best"] = (*_stats(vals), [b["epoch"] for b in best], best[0]["metric"])
        rows.append(row)
    rows += (untrained_rows(records, dataset) + pixel_rows(records, dataset)) if rows else []
    lead = dataset_spec(dataset).lead_metric
    rows.sort(key=lambda row: (-_sort_value(row[lead][0]), row["loss"]))
    return rows


def _thread_set(runs: list[dict[str, Any]]) -> tuple[int, ...]:
    return tuple(sorted({t for t in map(threads, runs) if t is not None}))


def cpu_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The fingerprint of the CPU that computed a run (`pmlbal.cpu`), None where its record predates them."""
    numerics = record.get("numerics")
    return numerics.get("cpu") if isinstance(numerics, dict) and numerics.get("device") == "cpu" else None


def _cpu_set(runs: list[dict[str, Any]]) -> dict[str | None, dict[str, Any] | None]:
    """Fingerprint id -> fingerprint of the CPUs a row's runs came from (None: not recorded); {} on a GPU."""
    return {(fp or {}).get("id"): fp for r in runs if threads(r) is not None for fp in [cpu_of(r)]}


def _best(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's best evaluated epoch (by its config's lead metric), also for records written
    before `train` stored it."""
    return record.get("best") or best_epoch(record.get("epochs", []), record["config"].get("lead_metric", "recall@1"))


def _sort_value(v: float) -> float:
    return -math.inf if math.isnan(v) else v
