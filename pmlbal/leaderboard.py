"""Leaderboards from run records: <dataset>.md / .csv per data set and an index README.md."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, pstdev
from typing import Any, Callable

from .metrics import STANDARD_KS
from .records import atomic_write_text, iter_records

EXTRA_METRICS = ("map_at_r", "r_precision")


def loss_label(config: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(config.get("loss_kwargs", {}).items()))
    label = f"{config['loss']}({kwargs})" if kwargs else config["loss"]
    if config.get("protocol"):
        label += f" [protocol {config['protocol']}]"
    if not config.get("tuned_from"):
        return label
    runs = config.get("tuned_runs")
    return label + (f" [tuned, {runs} val run{'s' if runs != 1 else ''}]" if runs else " [tuned]")


def build_rows(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One row per configuration evaluated on test: metrics as mean and std over its seeds, sorted by Recall@1."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        # Validation-split runs are tuning trials (class-disjoint val, part of train): not results.
        if r["config"]["dataset"] == dataset and r["config"].get("eval_split", "test") == "test":
            groups[r["config_key"]].append(r)
    ks = STANDARD_KS[dataset]
    rows = []
    for key, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        cfg = runs[0]["config"]
        row = {
            "loss": loss_label(cfg), "config_key": key, "seeds": len(runs),
            "backbone": cfg["backbone"], "embedding_dim": cfg["embedding_dim"], "batch_size": cfg["batch_size"],
            "epochs": cfg["epochs"], "train_time_s": mean(r.get("train_time_s") or 0.0 for r in runs),
            "command": runs[0]["command"], "device": runs[0].get("device", "?"), "eval_split": cfg["eval_split"],
        }
        for name in [f"recall@{k}" for k in ks] + list(EXTRA_METRICS):
            vals = [r["final"][name] for r in runs if name in r["final"]]
            row[name] = (mean(vals), pstdev(vals) if len(vals) > 1 else 0.0) if vals else (math.nan, math.nan)
        best = [b for b in (_best(r) for r in runs) if b is not None]
        if best:  # runs evaluated every few epochs: the best epoch too, as papers that report it do
            vals = [b["metrics"][f"recall@{ks[0]}"] for b in best]
            row["best"] = (mean(vals), pstdev(vals) if len(vals) > 1 else 0.0, [b["epoch"] for b in best],
                           best[0]["metric"])
        rows.append(row)
    rows.sort(key=lambda row: (-row[f"recall@{ks[0]}"][0], row["loss"]))
    return rows


def _best(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's best evaluated epoch (by its config's lead metric), also for records written
    before `train` stored it."""
    from .train import best_epoch

    return record.get("best") or best_epoch(record.get("epochs", []), record["config"].get("lead_metric", "recall@1"))


def _metric_names(dataset: str) -> list[str]:
    return [f"recall@{k}" for k in STANDARD_KS[dataset]] + list(EXTRA_METRICS)


def render_markdown(rows: list[dict[str, Any]], dataset: str, expected_seeds: int) -> str:
    metrics = _metric_names(dataset)
    devices = sorted({r["device"] for r in rows})
    best_col = any("best" in r for r in rows)
    splits = sorted({r["eval_split"] for r in rows})
    lines = [
        f"# {dataset} leaderboard",
        "",
        f"Protocol: zero-shot retrieval, trained on the train classes, evaluated on the `{'/'.join(splits)}` split "
        f"(classes never seen in training); exact search; values in %, mean ± std over seeds. "
        f"Hardware: {'; '.join(devices)}. "
        + (f"Rows with fewer than {expected_seeds} seeds are marked †; a single run shows no ±. "
           if any(r["seeds"] < expected_seeds for r in rows) else "")
        + "Every row comes from the run records in `runs/`; rebuild with `pmlbal leaderboard`."
        + (f" Metrics are the final epoch's; *best epoch* is the highest test R@{STANDARD_KS[dataset][0]} among the "
           "epochs evaluated (`--eval-every`), picked by the run's lead metric, with its epoch per seed: the number "
           "papers that report their best epoch give, chosen on test and so optimistic." if best_col else ""),
        "",
        "| # | loss | " + " | ".join(m.replace("recall@", "R@").replace("map_at_r", "MAP@R").replace("r_precision", "RP")
                                      for m in metrics) + (" | best epoch" if best_col else "")
        + " | seeds | backbone | dim | batch | epochs | train s | command |",
        "|---|---|" + "---|" * len(metrics) + ("---|" if best_col else "") + "---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows, 1):
        # One run has no spread to report: "± 0.00" would claim one.
        cells = [f"{100 * row[m][0]:.2f}" + (f" ± {100 * row[m][1]:.2f}" if row["seeds"] > 1 else "") for m in metrics]
        if best_col:
            b = row.get("best")
            cells.append("–" if b is None else f"{100 * b[0]:.2f}" + (f" ± {100 * b[1]:.2f}" if len(b[2]) > 1 else "")
                         + f" (epoch {', '.join(map(str, b[2]))})")
        mark = "" if row["seeds"] >= expected_seeds else " †"
        lines.append(
            f"| {i} | {row['loss']} | " + " | ".join(cells)
            + f" | {row['seeds']}{mark} | {row['backbone']} | {row['embedding_dim']} | {row['batch_size']}"
            f" | {row['epochs']} | {row['train_time_s']:.0f} | `{row['command']} --seed S` |"
        )
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict[str, Any]], dataset: str) -> str:
    metrics = _metric_names(dataset)
    best_col = any("best" in r for r in rows)
    k = STANDARD_KS[dataset][0]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["loss", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")], "seeds", "backbone",
                "embedding_dim", "batch_size", "epochs", "train_time_s", "config_key", "command"]
               + ([f"best_recall@{k}_mean", f"best_recall@{k}_std", "best_epochs"] if best_col else []))
    for row in rows:
        b = row.get("best")
        w.writerow([row["loss"], *[f"{row[m][i]:.6f}" for m in metrics for i in (0, 1)], row["seeds"], row["backbone"],
                    row["embedding_dim"], row["batch_size"], row["epochs"], f"{row['train_time_s']:.1f}",
                    row["config_key"], row["command"]]
                   + ([] if not best_col else ["", "", ""] if b is None
                      else [f"{b[0]:.6f}", f"{b[1]:.6f}", " ".join(map(str, b[2]))]))
    return buf.getvalue()


def write_leaderboards(results_dir: str | Path = "results", dataset: str | None = None, expected_seeds: int | None = None,
                       plots: bool = True, warn: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Write DIR/<dataset>.md/.csv (+ PNG plots) for each data set with records, and DIR/README.md."""
    results_dir = Path(results_dir)
    records = list(iter_records(results_dir, on_error=lambda msg: warn(f"skipped {msg}")))
    datasets = sorted({r["config"]["dataset"] for r in records}) if dataset is None else [dataset]
    boards = {}
    for ds in datasets:
        rows = build_rows(records, ds)
        if not rows:
            continue
        n = expected_seeds or max(r["seeds"] for r in rows)
        atomic_write_text(results_dir / f"{ds}.md", render_markdown(rows, ds, n))
        atomic_write_text(results_dir / f"{ds}.csv", render_csv(rows, ds))
        if plots:
            from .plots import plot_all

            plot_all(results_dir, ds, rows, [r for r in records if r["config"]["dataset"] == ds])
        boards[ds] = rows
    _write_index(results_dir)
    return boards


def _write_index(results_dir: Path) -> None:
    lines = ["# Leaderboards", "", "Built by `pmlbal leaderboard` from the run records in `runs/`.", ""]
    for md in sorted(results_dir.glob("*.md")):
        if md.name == "README.md":
            continue
        pngs = sorted(p.name for p in results_dir.glob(f"{md.stem}_*.png"))
        lines.append(f"- [{md.stem}]({md.name}) ([csv]({md.stem}.csv))" + "".join(f", [{p}]({p})" for p in pngs))
    atomic_write_text(results_dir / "README.md", "\n".join(lines) + "\n")
