"""Leaderboard plots (PNG): Recall@K bars, Recall@1 vs balance per batch size, loss-term curves."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import STANDARD_KS  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write `fig` to `path` atomically (a temporary file in the same folder, then a rename) and close it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_recall_bars(path: Path, dataset: str, rows: list[dict[str, Any]]) -> list[str]:
    ks = STANDARD_KS[dataset]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        means = [100 * r[f"recall@{k}"][0] for r in rows]
        stds = [100 * r[f"recall@{k}"][1] for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], means, width, yerr=stds, capsize=2, label=f"R@{k}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["loss"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_title(f"{dataset}: Recall@K (mean ± std over seeds)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return [f"R@{k}" for k in ks]


def balance_sweep_series(records: list[dict[str, Any]]) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(series label, batch size) -> sorted [(balance, mean Recall@1)] for configurations that
    differ only in balance (and seed), where at least two balances were run."""
    acc: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cfg = r["config"]
        kwargs = dict(cfg["loss_kwargs"])
        bal = kwargs.pop("balance", None)
        if bal is None:
            continue
        rest = {k: v for k, v in cfg.items() if k not in ("loss_kwargs", "seed", "batch_size")}
        label = cfg["loss"] + (f"({', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})" if kwargs else "")
        key = (label, cfg["batch_size"], json.dumps(rest, sort_keys=True, default=str))
        acc[key][float(bal)].append(r["final"]["recall@1"])
    return {(label, bsz): sorted((b, sum(v) / len(v)) for b, v in by_bal.items())
            for (label, bsz, _), by_bal in acc.items() if len(by_bal) >= 2}


def plot_balance_sweep(path: Path, dataset: str, records: list[dict[str, Any]]) -> list[str]:
    series = balance_sweep_series(records)
    if not series:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = []
    for (loss, bsz), pts in sorted(series.items()):
        label = f"{loss}, batch {bsz}"
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
        labels.append(label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("balance")
    ax.set_ylabel("Recall@1 (%)")
    ax.set_title(f"{dataset}: Recall@1 vs balance")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return labels


def plot_loss_terms(path: Path, dataset: str, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    first = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        first.setdefault(r["config_key"], r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    labels = []
    for row in rows:
        rec = first.get(row["config_key"])
        if not rec or not rec.get("steps") or "pos_term" not in rec["steps"][0]:
            continue
        labels.append(row["loss"])
        for ax, term in zip(axes, ("pos_term", "entropy_term")):
            ax.plot([s[term] for s in rec["steps"]], label=row["loss"], lw=1)
    for ax, term in zip(axes, ("positive term", "entropy term")):
        ax.set_title(f"{dataset}: {term} per step")
        ax.set_xlabel("step")
    if labels:
        axes[0].legend(fontsize=6)
    save_figure(fig, path)
    return labels


def plot_all(results_dir: Path, dataset: str, rows, records) -> None:
    plot_recall_bars(results_dir / f"{dataset}_recall.png", dataset, rows)
    plot_balance_sweep(results_dir / f"{dataset}_balance.png", dataset, records)
    plot_loss_terms(results_dir / f"{dataset}_terms.png", dataset, rows, records)
