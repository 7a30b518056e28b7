"""Leaderboard plots (PNG): Recall@K bars, the lead metric vs balance per (loss, batch size), loss-term curves.

Each plot has a `*_figure` builder returning the matplotlib Figure (what the tests read: series,
labels, legends) and a `plot_*` function that saves it atomically.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .board_rows import metric_label, untrained_rows  # noqa: E402
from .config import DEFAULTS, NOT_COMPUTED, at_default  # noqa: E402
from .figures import save_figure  # noqa: E402, F401  (public here too)
from .registry import dataset_spec  # noqa: E402

#: Config fields that say nothing about what a run computed (where it ran, what it was called).
_BOOKKEEPING = NOT_COMPUTED


def _metric_label(name: str) -> str:
    return metric_label(name)


def _legend_right(ax) -> None:
    """The legend right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=7)


def row_labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's loss label, with its batch size and epochs where two rows share a label (the
    board shows them in columns; a legend or tick label has only the name)."""
    counts = defaultdict(int)
    for r in rows:
        counts[r["loss"]] += 1
    labels = []
    for r in rows:
        label = r["loss"]
        if counts[label] > 1 and not r.get("untrained"):
            twins = [o for o in rows if o["loss"] == label]
            parts = [f"{name} {r[key]}" for key, name in (("batch_size", "batch"), ("epochs", "epochs"))
                     if len({o[key] for o in twins}) > 1]
            label += f" [{', '.join(parts) or r['config_key'][:6]}]"
        labels.append(label)
    return labels


# -- Recall@K bars --------------------------------------------------------------------------------------
#: Hatches of the two reference rows: the untrained network, and the raw pixels (no network at all).
HATCH_UNTRAINED, HATCH_PIXELS = "//", ".."


def _bars(ax, rows: list[dict[str, Any]], metrics: list[str], width: float) -> tuple[list[float], list[float]]:
    """One bar group per row, one bar per metric (mean ± sample s.d.; no error bar for a single run,
    which has no spread), the reference rows hatched; the lows and highs the bars reach."""
    lows, highs = [], []
    for j, m in enumerate(metrics):
        means = [100 * r[m][0] for r in rows]
        stds = [100 * r[m][1] if r.get("seeds", 1) > 1 else float("nan") for r in rows]
        bars = ax.bar([i + j * width for i in range(len(rows))], means, width, yerr=stds, capsize=2,
                      label=_metric_label(m))
        for bar, row in zip(bars, rows):
            if row.get("pixels"):
                bar.set_hatch(HATCH_PIXELS)
            elif row.get("untrained"):
                bar.set_hatch(HATCH_UNTRAINED)
        lows += [mu - (sd if sd == sd else 0) for mu, sd in zip(means, stds) if mu == mu]  # NaN: a metric a row lacks
        highs += [mu + (sd if sd == sd else 0) for mu, sd in zip(means, stds) if mu == mu]
    return lows or [0.0], highs or [100.0]


def recall_bars_figure(dataset: str, rows: list[dict[str, Any]]) -> Figure:
    """The board's rows as bars (mean ± sample s.d.; no error bar for one run): where the data set
    leads with another metric than Recall@1 (MAP@R), a first panel of it on an axis from 0, then
    Recall@K on an axis that spans the data (Recall@K of retrieval models sits in a narrow band near
    the top, invisible from 0; the axis label says where it starts). The untrained network's bars are
    hatched //, the raw pixels' dotted; each legend sits right of its bars."""
    spec = dataset_spec(dataset)
    ks, lead = spec.ks, spec.lead_metric
    panels = [[lead], [f"recall@{k}" for k in ks]] if lead != f"recall@{ks[0]}" else [[f"recall@{k}" for k in ks]]
    # One above the other, sharing the rows' order: the lead metric on top.
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.9 * len(rows)) + 2, 5.5 * len(panels)),
                             squeeze=False, layout="constrained")
    for ax, metrics in zip(axes[:, 0], panels):
        width = 0.8 / len(metrics)
        lows, highs = _bars(ax, rows, metrics, width)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
        ax.set_xticklabels(row_labels(rows), rotation=30, ha="right", fontsize=7)
        if metrics == [lead] and len(panels) == 2:  # the sort key: on a true scale
            ax.set_ylim(0.0, min(100.0, max(highs) * 1.1))
            ax.set_ylabel(f"{_metric_label(lead)} (%)")
            ax.set_title(f"{_metric_label(lead)}: the board's lead metric", fontsize=9)
            continue
        span = max(max(highs) - min(lows), 1.0)
        low = max(0.0, min(lows) - 0.1 * span)
        ax.set_ylim(low, min(100.0, max(highs) + 0.05 * span))
        ax.set_ylabel("Recall@K (%)" + (f"; axis from {low:.0f} %, not 0" if low > 0 else ""))
        ax.set_title("Recall@K", fontsize=9)
        _legend_right(ax)
    fig.suptitle(f"{dataset}: mean ± sample s.d. over seeds; hatched //: untrained network, dotted: raw pixels",
                 fontsize=9)
    return fig


def plot_recall_bars(path: Path, dataset: str, rows: list[dict[str, Any]]) -> list[str]:
    save_figure(recall_bars_figure(dataset, rows), path)
    return [f"R@{k}" for k in dataset_spec(dataset).ks]


# -- lead metric vs balance -----------------------------------------------------------------------------
def balance_sweep_series(records: list[dict[str, Any]], metric: str = "recall@1"
                         ) -> dict[tuple[str, int], list[tuple[float, float, float, int]]]:
    """(series label, batch size) -> sorted [(balance, mean, std, seeds) of `metric`] from the
    test-split records whose configurations differ only in balance (and seed), where at least two
    balances were run.

    Validation runs (tuning trials) are left out: the plot reports results. Two series of one loss
    and batch size that differ in anything else (epochs, lr, ...) get that difference in their label.
    Configurations are compared off `TrainConfig`'s defaults, as run identities are: a field an older
    record lacks equals the same field written at its default value.
    """
    acc: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    rests: dict[tuple, dict[str, Any]] = {}
    for r in records:
        cfg = r["config"]
        if cfg.get("eval_split", "test") != "test" or metric not in r["final"]:
            continue
        kwargs = dict(cfg["loss_kwargs"])
        bal = kwargs.pop("balance", None)
        if bal is None:
            continue
        rest = {k: v for k, v in cfg.items() if k not in _BOOKKEEPING | {"loss_kwargs", "batch_size", "loss"}
                and not at_default(k, v)}
        label = cfg["loss"] + (f"({', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})" if kwargs else "")
        key = (label, cfg["batch_size"], json.dumps(rest, sort_keys=True, default=str))
        acc[key][float(bal)].append(r["final"][metric])
        rests[key] = rest
    keys = [k for k, by_bal in acc.items() if len(by_bal) >= 2]
    out = {}
    for key in keys:
        label, bsz, _ = key
        twins = [k for k in keys if k[:2] == key[:2]]

        def value(k, f):  # a field a record lacks holds its default
            return rests[k].get(f, DEFAULTS.get(f))

        differing = sorted({f for t in twins for f in rests[t] if any(value(t, f) != value(o, f) for o in twins)})
        if differing:
            label += " [" + ", ".join(f"{f}={value(key, f)}" for f in differing) + "]"
        out[(label, bsz)] = sorted((b, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for b, v in acc[key].items())
    return out


def balance_sweep_figure(dataset: str, records: list[dict[str, Any]]) -> Figure | None:
    """The data set's lead metric against balance, one line per (loss, batch size), batch size in
    the legend, ± one sample s.d. over seeds shaded where a point has several; the untrained model as a
    dashed line. None when no sweep was run on test."""
    lead = dataset_spec(dataset).lead_metric
    series = balance_sweep_series(records, lead)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = set()
    for (loss, bsz), pts in sorted(series.items(), key=lambda item: (item[0][0], item[0][1])):
        x, mean, std = (np.array([p[i] for p in pts]) for i in range(3))
        (line,) = ax.plot(x, 100 * mean, marker="o", label=f"{loss}, batch {bsz}")
        if any(p[3] > 1 for p in pts):
            ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.15, lw=0)
        seeds.update(p[3] for p in pts)
    for row in untrained_rows(records, dataset):
        ax.axhline(100 * row[lead][0], ls="--", color="grey", lw=1, label=f"untrained {row['backbone']}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.25, not 2^-2
    ax.set_xlabel("balance")
    ax.set_ylabel(f"{_metric_label(lead)} (%), test")
    n = min(seeds) if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)}"
    over = "one seed" if seeds == {1} else f"mean ± sample s.d. over {n} seeds"
    ax.set_title(f"{dataset}: {_metric_label(lead)} vs balance ({over})")
    _legend_right(ax)
    return fig


def plot_balance_sweep(path: Path, dataset: str, records: list[dict[str, Any]]) -> list[str]:
    """Write the balance plot (or remove a stale one when there is no sweep); return its line labels."""
    fig = balance_sweep_figure(dataset, records)
    if fig is None:
        Path(path).unlink(missing_ok=True)
        return []
    labels = [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("untrained")]
    save_figure(fig, path)
    return labels


# -- loss terms -------------------------------------------------------------------------------------------
def loss_terms_figure(dataset: str, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> Figure:
    """Positive and entropy term per training step (first seed of each board row), one shared
    legend; rows whose records hold no terms (PML's losses do not expose them) are named below."""
    first = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        first.setdefault(r["config_key"], r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    colours = plt.get_cmap("tab20").colors
    without, drawn = [], 0
    for row, label in zip(rows, row_labels(rows)):
        if row.get("untrained"):
            continue
        rec = first.get(row["config_key"])
        if not rec or not rec.get("steps") or "pos_term" not in rec["steps"][0]:
            without.append(label)
            continue
        for ax, term in zip(axes, ("pos_term", "entropy_term")):  # tab20: no two runs share a colour
            ax.plot([s[term] for s in rec["steps"]], label=label, lw=1, color=colours[drawn % len(colours)])
        drawn += 1
    for ax, term in zip(axes, ("positive (alignment) term", "entropy (uniformity) term")):
        ax.set_title(f"{dataset}: {term}; lower is better", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{term.split(' ')[0]} term value (the loss minimises it)")
    fig.tight_layout()
    if axes[0].get_lines():  # both panels show the same runs: one legend for the two
        fig.legend(*axes[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7)
    if without:
        fig.text(0.01, -0.02, "No recorded terms (PML's own losses do not expose them): " + ", ".join(without),
                 fontsize=7, ha="left", va="top")
    return fig


def plot_loss_terms(path: Path, dataset: str, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    fig = loss_terms_figure(dataset, rows, records)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    save_figure(fig, path)
    return labels


def plot_all(results_dir: Path, dataset: str, rows, records) -> None:
    plot_recall_bars(results_dir / f"{dataset}_recall.png", dataset, rows)
    plot_balance_sweep(results_dir / f"{dataset}_balance.png", dataset, records)
    plot_loss_terms(results_dir / f"{dataset}_terms.png", dataset, rows, records)
