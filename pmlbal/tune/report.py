"""A study's trajectory as text and as a plot (metric vs trial; path through balance x batch size)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .coordinate_descent import key_value
from .optuna import pick, trial_point, trial_run


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trajectory(study: optuna.Study) -> list[dict[str, Any]]:
    """Trials in order with state, parameters, run index, value, and the pick after that trial
    (SPEC section 5: the point with the best mean of its runs) with its mean and run count."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    sign = 1.0 if maximize else -1.0
    groups: dict[tuple, list[float]] = {}
    rows, pick_key = [], None
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        params = trial_point(t)
        improved = False
        if t.state == TrialState.COMPLETE:
            key = tuple(sorted((k, key_value(v)) for k, v in params.items()))
            groups.setdefault(key, []).append(t.value)
            before = pick_key
            pick_key = max(groups, key=lambda k: (sign * sum(groups[k]) / len(groups[k]), len(groups[k])))
            improved = pick_key != before
        best = sum(groups[pick_key]) / len(groups[pick_key]) if pick_key is not None else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "params": params, "run": trial_run(t),
                     "value": t.value, "best": best, "best_runs": len(groups[pick_key]) if pick_key else 0,
                     "improved": improved, "error": t.user_attrs.get("error"), "run_id": t.user_attrs.get("run_id")})
    return rows


def format_trajectory(study: optuna.Study) -> str:
    rows = trajectory(study)
    names = sorted({k for r in rows for k in r["params"]})
    head = ["#", "state"] + names + ["run", "value", "pick so far (mean, runs)", ""]
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
        lines.append(f"pick: {', '.join(f'{k}={_fmt(v)}' for k, v in best.params.items())}: "
                     f"mean {_fmt(best.value)} over {best.runs} {runs} (trials {', '.join(map(str, best.trials))})")
    return "\n".join(lines)


def plot_trajectory(study: optuna.Study, path: str | Path, x: str = "balance", y: str = "batch_size") -> Path:
    """Two panels: value per trial with the best so far; the trials in the x-y plane (log2 axes),
    coloured by value, with the path the best point took."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    rows = trajectory(study)
    done = [r for r in rows if r["value"] is not None]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no finished trial to plot")
    names = sorted({k for r in rows for k in r["params"]})
    x = x if x in names else names[0]
    y = y if y in names else (names[1] if len(names) > 1 else names[0])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["number"] for r in done], [r["value"] for r in done], "o", ms=4, alpha=0.6, label="trial")
    a.step([r["number"] for r in done], [r["best"] for r in done], where="post", label="pick so far (mean of its runs)")
    a.set_xlabel("trial")
    a.set_ylabel(study.user_attrs.get("pmlbal:spec", {}).get("metric", "value"))
    a.legend(fontsize=8)
    a.set_title(f"{study.study_name}: {len(rows)} trials")

    def axis(v):
        return math.log2(v) if isinstance(v, (int, float)) and v > 0 else v

    pts = [(axis(r["params"][x]), axis(r["params"][y]), r["value"]) for r in done if x in r["params"] and y in r["params"]]
    sc = b.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis", s=30)
    path_pts = [(axis(r["params"][x]), axis(r["params"][y])) for r in done if r["improved"] and x in r["params"] and y in r["params"]]
    if path_pts:
        b.plot([p[0] for p in path_pts], [p[1] for p in path_pts], "-", color="red", lw=1.5, label="best point's path")
        b.plot(*path_pts[-1], "*", color="red", ms=14)
        b.legend(fontsize=8)
    fig.colorbar(sc, ax=b)
    b.set_xlabel(f"log2 {x}")
    b.set_ylabel(f"log2 {y}")
    b.set_title(f"trials in the {x} x {y} plane")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path
