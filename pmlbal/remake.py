"""Re-make stale records: re-train, with the current code, the runs whose records were computed by
an earlier numerics version (`pmlbal.records.NUMERICS_VERSION`), so the boards built from them
are this code's results again."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

from .config import TrainConfig
from .records import RunLockedError, check_writable, is_current, iter_records, numerics_version
from .train import train
from .loop import DivergedError


def stale_runs(results_dir: str | Path, dataset: str | None = None, split: str | None = "test") -> list[dict[str, Any]]:
    """One record per (configuration, seed) under DIR/runs/ that has no record of the current
    numerics version: the latest of its stale records, in file order. `split` keeps the runs
    evaluated on that split (None: all, tuning trials included)."""
    by_run: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in iter_records(results_dir):
        cfg = r["config"]
        if dataset is not None and cfg["dataset"] != dataset:
            continue
        if split is not None and cfg.get("eval_split", "test") != split:
            continue
        by_run.setdefault((r["config_key"], r["seed"]), []).append(r)
    return [max(rs, key=lambda r: str(r.get("created", ""))) for rs in by_run.values()
            if not any(is_current(r) for r in rs)]


def remake(results_dir: str | Path, dataset: str | None = None, split: str | None = "test",
           log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Re-train every stale run (`stale_runs`) into `results_dir`, where its new record replaces the
    old one (same key and seed). Returns (records written, stale records not re-made: diverged, or
    trained by another process that has not finished). Several processes may share one folder, as
    `pmlbal bench` processes do."""
    check_writable(Path(results_dir) / "runs")
    todo = stale_runs(results_dir, dataset, split)
    names = {f.name for f in fields(TrainConfig)}
    done, left = [], []
    for n, old in enumerate(todo, 1):
        cfg = replace(TrainConfig(**{k: v for k, v in old["config"].items() if k in names}), results_dir=str(results_dir))
        where = f"[{n}/{len(todo)}] {cfg.dataset} {old['command'].split(' --loss ', 1)[-1]} (seed {old['seed']})"
        try:
            record = train(cfg, reuse=True, resume=True, log=lambda note: log(f"{where}: {note}"))
        except RunLockedError:
            log(f"{where}: another process is training it; left to that one")
            left.append(old)
            continue
        except DivergedError as err:
            log(f"{where}: {err}")
            left.append(old)
            continue
        was = old["final"].get("map_at_r")
        now = record["final"].get("map_at_r")
        log(f"{where}: MAP@R {now:.4f} (numerics {numerics_version(old)}: {was:.4f})"
            if was is not None and now is not None else f"{where}: done")
        done.append(record)
    return done, left
