"""A study's trajectory as text and as a plot (metric vs trial; path through balance x batch size)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from .optuna import ENDED, SPEC, pick, study_table, trial_point, trial_run


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trajectory(study: optuna.Study) -> list[dict[str, Any]]:
    """Trials in order with state, parameters, run index, value, and the pick after that trial (the
    trial table's pick over the trials so far, `pick`'s rule) with its mean and run count."""
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    rows, pick_key = [], None
    for i, t in enumerate(trials):
        chosen = study_table(study, [u for u in trials[: i + 1] if u.state in ENDED]).pick()
        key = chosen.key if chosen else None
        improved, pick_key = key is not None and key != pick_key, key
        rows.append({"number": t.number, "state": t.state.name.lower(), "params": trial_point(t), "run": trial_run(t),
                     "value": t.value, "best": sign * chosen.value if chosen else None,
                     "best_runs": chosen.runs if chosen else 0, "is_default": bool(chosen and chosen.is_default),
                     "improved": improved, "error": t.user_attrs.get("error"), "run_id": t.user_attrs.get("run_id")})
    return rows


def metric_name(study: optuna.Study) -> str:
    """What a trial's value is: the validation metric `pmlbal tune --metric` maximised ("value" for
    a study made elsewhere)."""
    metric = study.user_attrs.get(SPEC, {}).get("metric")
    return f"val {metric}" if metric else "value"


def format_trajectory(study: optuna.Study) -> str:
    rows = trajectory(study)
    metric = metric_name(study)
    names = sorted({k for r in rows for k in r["params"]})
    head = ["#", "state"] + names + ["run", metric, "pick so far (mean, runs)", ""]
    table = [head]
    for r in rows:
        table.append([str(r["number"]), r["state"]] + [_fmt(r["params"].get(n, "")) for n in names]
                     + [str(r["run"]), _fmt(r["value"]) if r["value"] is not None else (r["error"] or "-"),
                        f"{_fmt(r['best'])} ({r['best_runs']})" if r["best"] is not None else "-",
                        "*" if r["improved"] else ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    best = pick(study) if any(r["value"] is not None for r in rows) else None
    if best is not None:
        runs = "run" if best.runs == 1 else "runs"
        lines.append(versus_defaults(best))
        lines.append(f"pick: {', '.join(f'{k}={_fmt(v)}' for k, v in best.params.items())}: "
                     f"{metric} {_fmt(best.value)}, mean over {best.runs} {runs} (trials {', '.join(map(str, best.trials))})")
    return "\n".join(lines)


def versus_defaults(best) -> str:
    """One line on the pick against the defaults (the study's record and the board say the same)."""
    g = best.vs_default
    if best.is_default and g is None:
        return "the pick is the defaults: no other configuration has a run that ended well"
    if best.is_default and g.beats:  # ahead on its one run, never re-run: a budget too small to confirm it
        return (f"the pick is the defaults: the best other point led by {g.mean:+.4f} ± {g.se:.4f} s.e. on its one "
                f"paired run, but a point must be confirmed (re-run) to replace them: give a larger --budget")
    if best.is_default:
        return (f"the pick is the defaults: no configuration beat them on paired runs (the best other: "
                f"{g.mean:+.4f} ± {g.se:.4f} s.e. over {g.pairs} pair{'s' if g.pairs != 1 else ''})")
    if g is None:
        return "no defaults to compare with (the study did not run them, or they failed)"
    return f"beats the defaults by {g.mean:+.4f} ± {g.se:.4f} s.e. on {g.pairs} paired run{'s' if g.pairs != 1 else ''}"


def _scales(study: optuna.Study, names: list[str], rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each coordinate's scale: from the study's spec (`pmlbal tune`), else guessed from its values."""
    dims = {d["name"]: d["scale"] for d in study.user_attrs.get(SPEC, {}).get("dims", [])}
    out = {}
    for n in names:
        values = [r["params"][n] for r in rows if isinstance(r["params"].get(n), (int, float))]
        if n in dims:
            out[n] = dims[n]
        elif values and min(values) > 0 and max(values) >= 8 * min(values):
            out[n] = "log2-int" if all(float(v).is_integer() for v in values) else "log"
        else:
            out[n] = "linear" if values else "categorical"
    return out


def _set_axis(ax, which: str, scale: str, values: list[Any]) -> None:
    """Log axes in base 2 for log scales; a power-of-two integer coordinate (the batch size) gets
    ticks at its integer values only, never 2^4.5."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    if scale in ("log", "log2-int", "log-int"):
        (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=2)
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if scale in ("log2-int", "log-int", "int"):
        nums = [v for v in values if isinstance(v, (int, float))]
        if nums:
            lo, hi = math.floor(math.log2(min(nums))), math.ceil(math.log2(max(nums)))
            ticks = [2**e for e in range(lo, hi + 1)] if scale != "int" else sorted({int(v) for v in nums})
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))
            axis.set_minor_locator(NullLocator())


def trajectory_figure(study: optuna.Study, x: str = "balance", y: str = "batch_size"):
    """The study as a Figure: value per trial with the pick so far; the trials in the x-y plane,
    coloured by value (labelled colour bar), with the best point's path; and one panel per tuned
    coordinate (value against it, the pick starred), so every coordinate is shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = trajectory(study)
    done = [r for r in rows if r["value"] is not None]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no finished trial to plot")
    metric = metric_name(study)
    names = sorted({k for r in rows for k in r["params"]})
    scales = _scales(study, names, done)
    x = x if x in names else names[0]
    y = y if y in names else (names[1] if len(names) > 1 else names[0])
    fig = plt.figure(figsize=(max(11, 3.6 * len(names)), 8), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    a, b = top.subplots(1, 2)
    a.plot([r["number"] for r in done], [r["value"] for r in done], "o", ms=4, alpha=0.6, label="trial")
    a.step([r["number"] for r in done], [r["best"] for r in done], where="post", label="pick so far (mean of its runs)")
    a.set_xlabel("trial")
    a.set_ylabel(metric)
    a.legend(fontsize=8)
    a.set_title(f"{study.study_name}: {len(rows)} trials")

    both = [r for r in done if x in r["params"] and y in r["params"]]
    sc = b.scatter([r["params"][x] for r in both], [r["params"][y] for r in both], c=[r["value"] for r in both],
                   cmap="viridis", s=30)
    path = [r for r in both if r["improved"]]
    if path:
        b.plot([r["params"][x] for r in path], [r["params"][y] for r in path], "-", color="red", lw=1.5,
               label="best point's path")
        b.plot(path[-1]["params"][x], path[-1]["params"][y], "*", color="red", ms=14)
        b.legend(fontsize=8)
    top.colorbar(sc, ax=b, label=metric)
    _set_axis(b, "x", scales[x], [r["params"][x] for r in both])
    _set_axis(b, "y", scales[y], [r["params"][y] for r in both])
    b.set_xlabel(x)
    b.set_ylabel(y)
    b.set_title(f"trials in the {x} x {y} plane")

    best = pick(study)
    for ax, name in zip(bottom.subplots(1, len(names), squeeze=False)[0], names):
        have = [r for r in done if name in r["params"]]
        ax.plot([r["params"][name] for r in have], [r["value"] for r in have], "o", ms=4, alpha=0.6)
        if best is not None and name in best.params:
            ax.plot(best.params[name], best.value, "*", color="red", ms=12, label="pick (mean)")
            ax.legend(fontsize=7)
        _set_axis(ax, "x", scales[name], [r["params"][name] for r in have])
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    bottom.suptitle("every tuned coordinate: value against it", fontsize=9)
    return fig


def plot_trajectory(study: optuna.Study, path: str | Path, x: str = "balance", y: str = "batch_size") -> Path:
    """Write `trajectory_figure` to `path` (PNG, atomically)."""
    from ..figures import save_figure

    fig = trajectory_figure(study, x, y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path
