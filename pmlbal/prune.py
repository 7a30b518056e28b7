"""Retire board rows: the test records of a tuning study's pick move out of DIR/runs/ (into
DIR/pruned/<study>/, kept, off the boards) when the study is retired or no longer in its storage, and
the stale records of a configuration (an earlier numerics version's, which this code does not
compute) move to DIR/pruned/stale/ when their row is not worth re-training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from .records import RecordError, is_current, read_record


def tuned_from(record: dict) -> tuple[str, str] | None:
    """(storage URL, study name) of the study a tuned run's configuration came from; None if not tuned."""
    source = record.get("config", {}).get("tuned_from")
    if not source or "#" not in source:
        return None
    url, _, name = source.rpartition("#")
    return url, name


def prune(results_dir: str | Path, storage: str, studies: Sequence[str] = (), dry_run: bool = False,
          log: Callable[[str], None] = print) -> list[Path]:
    """Move to DIR/pruned/<study>/ the test records tuned by a study of `storage` that is named in
    `studies` (retired by hand: its rows are replaced) or, with no `studies`, that the storage no
    longer holds (deleted); the paths moved (or, with `dry_run`, that would be). Records from other
    storages are left alone; an unknown name in `studies` is an error before anything moves."""
    from .tune.storage import open_storage, storage_exists

    import optuna

    held = set(optuna.get_all_study_names(open_storage(storage, read_only=True))) if storage_exists(storage) else set()
    unknown = sorted(set(studies) - held)
    if unknown:
        raise ValueError(f"no study {', '.join(map(repr, unknown))} in {storage}; it holds: {', '.join(sorted(held)) or 'none'}")
    runs = Path(results_dir) / "runs"
    moved = []
    for path, record in _test_records(runs):
        source = tuned_from(record)
        if source is not None and source[0] == storage and \
                ((source[1] in studies) if studies else (source[1] not in held)):
            moved.append(_retire(path, Path(results_dir) / "pruned" / source[1], dry_run, log))
    return moved


def _test_records(runs: Path):
    """(path, record) of each readable test-split record under `runs`."""
    for path in sorted(runs.glob("*.json")):
        try:
            record = read_record(path)
        except RecordError:
            continue
        if record["config"].get("eval_split", "test") == "test":
            yield path, record


def _retire(path: Path, folder: Path, dry_run: bool, log: Callable[[str], None]) -> Path:
    """Move `path` into `folder` (kept, off the boards), or with `dry_run` only say so; returns `path`."""
    target = folder / path.name
    log(f"{'would move' if dry_run else 'moved'} {path} -> {target}")
    if not dry_run:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    return path


def prune_stale(results_dir: str | Path, keys: Sequence[str], dry_run: bool = False,
                log: Callable[[str], None] = print) -> list[Path]:
    """Move to DIR/pruned/stale/ the stale test records (`pmlbal.records.is_current` false) of the
    configurations whose run key is in `keys`; the paths moved (or, with `dry_run`, that would be).
    A key with no stale test record is an error before anything moves: a typo retires nothing."""
    runs, found = Path(results_dir) / "runs", {}
    for path, record in _test_records(runs):
        if record["config_key"] in keys and not is_current(record):
            found.setdefault(record["config_key"], []).append(path)
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"no stale test record of configuration {', '.join(map(repr, missing))} under {runs}")
    return [_retire(path, Path(results_dir) / "pruned" / "stale", dry_run, log) for k in keys for path in found[k]]
