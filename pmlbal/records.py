"""Run records: one JSON file per training run, written atomically, read with validation."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REQUIRED = ("schema", "run_id", "config", "final", "config_key", "seed", "command")


class RecordError(ValueError):
    """A record file that cannot be used (unreadable, missing fields, other schema)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def config_key(config: dict[str, Any]) -> str:
    """Identity of a configuration, seed and bookkeeping fields excluded: the leaderboard's row."""
    ignore = {"seed", "results_dir", "progress", "cache_dir", "num_workers"}
    stable = {k: v for k, v in sorted(config.items()) if k not in ignore}
    return hashlib.sha1(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:12]


def new_run_id(config: dict[str, Any]) -> str:
    # Unique even for two processes running the same config and seed at once.
    return f"{config['dataset']}-{config['loss']}-{config_key(config)}-s{config['seed']}-{uuid.uuid4().hex[:8]}"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    path = Path(results_dir) / "runs" / f"{record['run_id']}.json"
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=_jsonable))
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and validate one record; RecordError names the file and the problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: unreadable record ({err})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a JSON object")
    if record.get("schema") != SCHEMA_VERSION:
        raise RecordError(f"{path}: schema {record.get('schema')!r}, expected {SCHEMA_VERSION}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise RecordError(f"{path}: missing field(s) {', '.join(missing)}")
    return record


def iter_records(results_dir: str | Path, on_error=None):
    """Yield valid records under `results_dir/runs`; invalid ones go to `on_error(message)`."""
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
        try:
            yield read_record(path)
        except RecordError as err:
            if on_error is not None:
                on_error(str(err))


def find_existing(results_dir: str | Path, key: str, seed: int) -> dict[str, Any] | None:
    for record in iter_records(results_dir):
        if record["config_key"] == key and record["seed"] == seed:
            return record
    return None


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
