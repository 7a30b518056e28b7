"""Tuned rows against their defaults, paired by seed, from the records and studies (docs/tuner.md).

Usage:
    python benchmarks/tuned_rows.py [--dataset cjk-glyphs] [--storage sqlite:///results/tuning.db]
                                    [--studies NAME,NAME,...]

For each tuning study of the data set (default: every study of search version 3 whose pick was trained
on test): the pick and the defaults it started from, their validation means, the test MAP@R of the
pick's runs and of the defaults' runs at each seed, the paired difference by seed (mean and sample
s.d.), the number of training runs the study spent and their summed wall time (Optuna's start and
end of each trial). Nothing is trained: it reads `results/runs/` and the storage. A seed missing on
either side is left out of the pairing and said so.

A second table puts each tuned row against the strongest untuned row of its loss family on the same
board (`FAMILY`: PML's class the balanced one generalises, at any arguments chosen by hand, and the
balanced class at its own defaults): the test rows that differ from the tuned one only in the loss and its arguments
(same batch size, epochs, sampler, ...) and have every seed it has; the best of them by mean MAP@R is
the baseline, and the paired difference by seed is what a PML user gains by tuning.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import optuna

from pmlbal.config import NOT_COMPUTED, TrainConfig, at_default
from pmlbal.records import find_existing, iter_records, run_key
from pmlbal.tune.optuna import SPEC, pick, study_defaults
from pmlbal.tune.model import StudySpec
from pmlbal.tune.spec import load_spec
from pmlbal.tune.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)


def tuned_runs(results_dir: str, source: str) -> dict[int, dict]:
    """Seed -> the test record tuned from `source` ("URL#study")."""
    return {r["seed"]: r for r in iter_records(results_dir)
            if r["config"].get("tuned_from") == source and r["config"].get("eval_split", "test") == "test"}


def default_runs(results_dir: str, spec: StudySpec, seeds) -> dict[int, dict]:
    """Seed -> the test record of the configuration the study started from (the line-up row)."""
    base = TrainConfig(dataset=spec.dataset, loss=spec.loss, loss_kwargs=dict(spec.base.get("loss_kwargs") or {}),
                       results_dir=results_dir)
    out = {}
    for seed in seeds:
        cfg = replace(base, seed=seed).resolved()
        record = find_existing(results_dir, run_key(cfg), seed)
        if record is not None:
            out[seed] = record
    return out


def describe(study: optuna.Study, storage: str, results_dir: str) -> dict | None:
    spec = load_spec(study)
    chosen = pick(study)
    tuned = tuned_runs(results_dir, f"{storage}#{study.study_name}")
    if chosen is None or not tuned:
        return None
    seeds = sorted(tuned)
    defaults = default_runs(results_dir, spec, range(max(seeds) + 1))
    paired = [s for s in seeds if s in defaults]
    diffs = [100 * (tuned[s]["final"]["map_at_r"] - defaults[s]["final"]["map_at_r"]) for s in paired]
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    x0, _ = study_defaults(study)
    x0_values = [t.value for t in study.trials if t.value is not None and x0 is not None
                 and all(t.params.get(k) == v for k, v in x0.items())]
    return {
        "study": study.study_name, "loss": spec.loss, "search": spec.search + ("+confirm" if spec.confirm and spec.search != "cd" else ""),
        "params": chosen.params, "is_default": chosen.is_default, "val": 100 * chosen.value, "val_runs": chosen.runs,
        "val_default": 100 * statistics.mean(x0_values) if x0_values else float("nan"),
        "tuned": {s: 100 * tuned[s]["final"]["map_at_r"] for s in seeds},
        "default": {s: 100 * defaults[s]["final"]["map_at_r"] for s in defaults},
        "diffs": diffs, "paired": paired, "runs": len(trials), "baseline": strongest_untuned(results_dir, tuned),
        "hours": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials) / 3600,
    }


#: PML's class each balanced loss generalises: its rows (any arguments a user picked by hand, never a
#: tuner's) and the balanced class at its own defaults (= PML's at PML's defaults) are the untuned rows.
FAMILY = {"BalancedNTXentLoss": "NTXentLoss", "BalancedContrastiveLoss": "ContrastiveLoss",
          "BalancedSupConLoss": "SupConLoss"}
_LOSS_FIELDS = NOT_COMPUTED | {"loss", "loss_kwargs", "eval_every"}


def _rest(cfg: dict) -> dict:
    """A configuration less its loss, what computes nothing (evaluating more often changes no weight) and
    the fields at their default (an older record lacks fields added since at their default value)."""
    return {k: v for k, v in cfg.items() if k not in _LOSS_FIELDS and not at_default(k, v)}


def strongest_untuned(results_dir: str, tuned: dict[int, dict]) -> tuple[str, dict[int, float]] | None:
    """(label, seed -> test MAP@R %) of the best untuned row of the tuned row's family that shares its
    other settings and has all its seeds; None if the board has none."""
    cfg = next(iter(tuned.values()))["config"]
    pml, rest = FAMILY.get(cfg["loss"]), _rest(cfg)
    groups: dict[str, dict[int, dict]] = {}
    for r in iter_records(results_dir):
        c = r["config"]
        untuned = c["loss"] == pml or c["loss"] == cfg["loss"] and not c["loss_kwargs"]
        if untuned and not c.get("tuned_from") and _rest(c) == rest:
            groups.setdefault(r["config_key"], {})[r["seed"]] = r
    full = [g for g in groups.values() if set(tuned) <= set(g)]
    if not full:
        return None
    best = max(full, key=lambda g: statistics.mean(g[s]["final"]["map_at_r"] for s in tuned))
    c = next(iter(best.values()))["config"]
    label = c["loss"] + "(" + ", ".join(f"{k}={v}" for k, v in sorted(c["loss_kwargs"].items())) + ")"
    return label, {s: 100 * best[s]["final"]["map_at_r"] for s in tuned}


def fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cjk-glyphs")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--studies", default="", help="comma list (default: every version-3 study of the data set)")
    args = ap.parse_args()
    storage = args.storage or f"sqlite:///{args.results_dir}/tuning.db"
    names = [n for n in args.studies.split(",") if n]
    backend = open_storage(storage, read_only=True)
    rows = []
    for name in names or sorted(optuna.get_all_study_names(backend)):
        study = optuna.load_study(study_name=name, storage=backend)
        spec = study.user_attrs.get(SPEC) or {}
        if spec.get("dataset") != args.dataset or (not names and spec.get("version") != 3):
            continue
        row = describe(study, storage, args.results_dir)
        if row is not None:
            rows.append(row)
    print(f"## {args.dataset}: tuned rows against their defaults (test MAP@R %, paired by seed)\n")
    print("| loss | study | search | pick | val: pick (runs) / defaults | test tuned by seed | test defaults by seed "
          "| paired diff, mean ± s.d. | runs | train h |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        by_seed = lambda d: " / ".join(f"{d[s]:.2f}" for s in sorted(d))  # noqa: E731
        diff = (f"{statistics.mean(r['diffs']):+.2f} ± {statistics.stdev(r['diffs']):.2f} (n={len(r['diffs'])})"
                if len(r["diffs"]) > 1 else (f"{r['diffs'][0]:+.2f} (n=1)" if r["diffs"] else "–"))
        pick_text = "the defaults" if r["is_default"] else fmt_params(r["params"])
        print(f"| {r['loss']} | {r['study']} | {r['search']} | {pick_text} | {r['val']:.2f} ({r['val_runs']}) / "
              f"{r['val_default']:.2f} | {by_seed(r['tuned'])} | {by_seed(r['default'])} | {diff} | {r['runs']} "
              f"| {r['hours']:.2f} |")
    print(f"\n## {args.dataset}: tuned rows against the strongest untuned row of their loss family "
          "(test MAP@R %, paired by seed)\n")
    print("| loss | study | strongest untuned row | its test by seed | tuned test by seed | paired diff, mean ± s.d. |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["baseline"] is None:
            continue
        label, base = r["baseline"]
        d = [r["tuned"][s] - base[s] for s in sorted(base)]
        spread = f" ± {statistics.stdev(d):.2f}" if len(d) > 1 else ""
        print(f"| {r['loss']} | {r['study']} | {label} | {by_seed(base)} | {by_seed({s: r['tuned'][s] for s in base})} "
              f"| {statistics.mean(d):+.2f}{spread} (n={len(d)}) |")


if __name__ == "__main__":
    main()
