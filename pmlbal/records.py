"""Run records: one JSON file per training run, written atomically, read with validation.

A record's file is named by what finds it: ``<dataset>-<loss>-<config_key>-s<seed>-<id>.json``
(`record_name`), so the look-ups of one configuration and seed (`find_existing`, `find_failed`,
`replace_record`) glob for that name and parse only what matches: their cost does not grow with
the number of stored records. `migrate` renames records written before this naming, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

from .config import BOOKKEEPING, TrainConfig, field_type_problem, identity
from .files import atomic_write_text  # noqa: F401  (imported from here by older callers)
from .procs import owner_alive, owner_id, remove_dead_temporaries

SCHEMA_VERSION = 1
#: What a training run computes, as a number. Bump it in the change that moves any run's metrics
#: (a loss's arithmetic, an initialisation, the batch order, an augmentation, the evaluation):
#: `tests/test_golden.py` re-runs a committed run and fails until it is bumped. Records of another
#: version are not reused (`find_existing`, `find_failed`) and the boards mark their rows. Records
#: written before the version existed count as version 0.
NUMERICS_VERSION = 1
REQUIRED = ("schema", "run_id", "config", "final", "config_key", "seed", "command")


class RecordError(ValueError):
    """A record file that cannot be used (unreadable, missing fields, other schema)."""


def config_key(config: dict[str, Any]) -> str:
    """Identity of a configuration, seed and bookkeeping fields excluded (`pmlbal.config.FIELD_ROLES`;
    "num_workers" is a field of old records): the leaderboard's row."""
    ignore = {"seed", "num_workers", *BOOKKEEPING}
    stable = {k: v for k, v in sorted(config.items()) if k not in ignore}
    return hashlib.sha1(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_key(cfg: TrainConfig) -> str:
    """The key of a run's configuration (its record's "config_key", its board row): `config_key` of
    the fields that make the run distinct (`pmlbal.config.identity`). Give it a resolved configuration."""
    return config_key(identity(cfg))


def new_run_id(config: dict[str, Any], key: str | None = None) -> str:
    """``<dataset>-<loss>-<key>-s<seed>-<8 hex>``: `key` is the run's `config_key` (default: that of
    `config` itself); the random tail keeps it unique even for two processes running the same
    configuration and seed at once."""
    key = config_key(config) if key is None else key
    return f"{config['dataset']}-{config['loss']}-{key}-s{config['seed']}-{uuid.uuid4().hex[:8]}"


def numerics_version(record: dict[str, Any]) -> int:
    """The numerics version a record was computed under (0: written before versions were recorded)."""
    numerics = record.get("numerics")
    return int(numerics.get("version", 0)) if isinstance(numerics, dict) else 0


def is_current(record: dict[str, Any]) -> bool:
    """Whether the current code computes what `record` holds (same `NUMERICS_VERSION`)."""
    return numerics_version(record) == NUMERICS_VERSION


def record_name(record: dict[str, Any]) -> str:
    """The file name of `record`: ``<dataset>-<loss>-<config_key>-s<seed>-<id>.json``, `<id>` the
    tail of its run id (for a record written by this version the name is ``<run_id>.json``)."""
    tail = str(record["run_id"]).rsplit("-", 1)[-1]
    config = record.get("config") or {}
    if "config_key" not in record or "dataset" not in config or "loss" not in config:
        return f"{record['run_id']}.json"  # not a run record of the schema: named by its id alone
    return f"{config['dataset']}-{config['loss']}-{record['config_key']}-s{record['seed']}-{tail}.json"


def write_record(record: dict[str, Any], results_dir: str | Path, folder: str = "runs") -> Path:
    """Write `record` to DIR/<folder>/`record_name(record)`; if that fails, keep it in the system's
    temp folder and raise an OSError naming both places (hours of training are not lost to a full disk)."""
    path = Path(results_dir) / folder / record_name(record)
    text = json.dumps(record, indent=1, sort_keys=True, default=_jsonable)
    if path.parent.is_dir():  # what processes killed while writing a record left here
        remove_dead_temporaries(path.parent, ".*.json.*.tmp")
    try:
        atomic_write_text(path, text)
    except OSError as err:
        fd, kept = tempfile.mkstemp(prefix=f"pmlbal-{record['run_id']}-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        raise OSError(f"cannot write the run record {path} ({err.strerror or err}); it is kept in {kept}: "
                      f"move it to {path.parent}/ and run `pmlbal leaderboard`") from None
    return path


def replace_record(record: dict[str, Any], results_dir: str | Path) -> tuple[Path, list[Path]]:
    """Write `record` and remove the other records (and failure records) of its configuration and
    seed: one run per (configuration, seed). Returns (its path, the paths it replaced)."""
    path = write_record(record, results_dir)
    replaced = []
    for folder in ("runs", "failed"):
        for old in _same_run(Path(results_dir) / folder, record["config_key"], record["seed"]):
            if old != path:
                old.unlink(missing_ok=True)
                replaced.append(old)
    return path, replaced


def _same_run(folder: Path, key: str, seed: int) -> list[Path]:
    """The files of `folder` holding configuration `key` and `seed`: found by name (one directory
    listing, a substring test per name), then only those parsed and checked."""
    tag = f"-{key}-s{int(seed)}-"
    try:
        # os.listdir gives plain names (no DirEntry per file): what still grows with the folder is
        # this listing (benchmarks/record_lookup.py), not the parsing of every record.
        names = sorted(n for n in os.listdir(folder) if tag in n and n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for path in (folder / name for name in names):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            # Named as this run's record but unreadable: the run is trained again beside it, so say why.
            warnings.warn(f"{path} is named as this run's record but is unreadable ({err}); the run is trained "
                          "again (remove the damaged file)", RuntimeWarning)  # here, not at a caller: one warning a file
            continue
        if isinstance(r, dict) and r.get("config_key") == key and r.get("seed") == seed:
            out.append(path)
    return out


def find_failed(results_dir: str | Path, key: str, seed: int) -> dict[str, Any] | None:
    """The failure record (DIR/failed/, e.g. a diverged run) of a configuration and seed under the
    current numerics version, if any: code that computes differently may not diverge."""
    for path in _same_run(Path(results_dir) / "failed", key, seed):
        record = json.loads(path.read_text())
        if not is_current(record):
            continue
        record["path"] = str(path)
        return record
    return None


def check_writable(folder: str | Path, what: str = "results folder", create: bool = True) -> Path:
    """Make `folder` (unless not `create`: then a missing folder passes) and write a probe file in
    it, before any work: OSError naming the folder if it cannot be written (a run must not train
    for hours and fail at its last line)."""
    folder = Path(folder)
    if not create and not folder.exists():
        above = next(p for p in folder.absolute().parents if p.exists())
        if above.is_dir() and os.access(above, os.W_OK):
            return folder
        raise OSError(f"{what} {folder} is not writable ({above} is not a writable folder); pick another --results-dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pmlbal-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(f"{what} {folder} is not writable ({err.strerror or err}); pick another --results-dir") from None
    return folder


# -- one process per run ------------------------------------------------------------------------------
class RunLockedError(RuntimeError):
    """Another live process holds the lock of this configuration and seed."""


def lock_path(results_dir: str | Path, key: str, seed: int) -> Path:
    return Path(results_dir) / "runs" / f".{key}-s{seed}.lock"


@contextlib.contextmanager
def run_lock(results_dir: str | Path, key: str, seed: int) -> Iterator[Path]:
    """Hold DIR/runs/.<key>-s<seed>.lock (created with O_EXCL, holding its owner "host:pid",
    `pmlbal.procs.owner_id`) while a run trains, so that two processes never train the same
    configuration and seed. A lock left by a dead process on this host is taken over; a live holder
    raises `RunLockedError`. O_EXCL rather than an flock: results folders are shared between machines
    (NFS), where create-exclusive holds and flock may not, and the file names its holder."""
    path = lock_path(results_dir, key, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = owner_id()
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = path.read_text()
            except FileNotFoundError:
                continue  # released meanwhile
            if not holder and time.time() - _mtime(path) < 5:
                time.sleep(0.2)  # written by a process that is still writing its pid
                continue
            if owner_alive(holder):
                raise RunLockedError(f"another process ({holder.strip() or '?'}) is training this configuration and "
                                     f"seed {seed} (lock {path}); wait for it, or delete the lock if it is gone")
            _remove_stale(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise RunLockedError(f"cannot take the lock {path} of configuration {key} seed {seed}")
    try:
        yield path
    finally:
        _release(path, me)


def _release(path: Path, me: str) -> None:
    # A folder that turned read-only (or vanished) under the run must not replace the error the run is
    # raising with this one: the lock is left, and the next run takes it over as a dead process's.
    try:
        if path.read_text() == me:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        warnings.warn(f"could not remove the run lock {path} ({err.strerror or err}); the next run takes it over",
                      RuntimeWarning, stacklevel=3)


def _remove_stale(path: Path, holder: str) -> None:
    """Remove a dead process's lock. Two processes may find it stale at once: a second O_EXCL file
    lets one of them check again and remove it, so that neither deletes a lock the other just took."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if time.time() - _mtime(guard) > 30:  # left by a process killed mid-takeover
            guard.unlink(missing_ok=True)
        time.sleep(0.1)
        return
    os.close(fd)
    try:
        try:
            still = path.read_text()
        except FileNotFoundError:
            return
        if still == holder:
            from tqdm import tqdm  # above a progress bar, not inside its line

            tqdm.write(f"pmlbal: removing the stale lock {path} of a process that is gone ({holder.strip() or '?'})",
                       file=sys.stderr)
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


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
    problem = _type_problem(record)
    if problem:
        raise RecordError(f"{path}: {problem}")
    return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with the types of the fields every reader relies on (the boards, the tuner, look-ups),
    or None: a record that passes is read without a TypeError anywhere."""
    for key in ("run_id", "config_key", "command"):
        if not isinstance(record[key], str):
            return f"{key} must be a string, got {record[key]!r}"
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool):
        return f"seed must be an integer, got {record['seed']!r}"
    cfg = record["config"]
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), str) for k in ("dataset", "loss")):
        return "config must be a mapping with a dataset and a loss name"
    if not isinstance(cfg.get("loss_kwargs", {}), dict):
        return f"config.loss_kwargs must be a mapping, got {cfg['loss_kwargs']!r}"
    for section in ("final", "initial", "pixels"):
        values = record.get(section)
        if values is None and section != "final":
            continue
        if not isinstance(values, dict):
            return f"{section} must be a mapping of metric names to numbers, got {values!r}"
        bad = next((k for k, v in values.items() if not _is_number(v)), None)
        if bad is not None:
            return f"{section}.{bad} must be a number, got {values[bad]!r}"
        nan = next((k for k, v in values.items() if section == "final" and v != v), None)
        if nan is not None:  # training never records NaN final metrics (`MetricsError`): this file was changed
            return f"final.{nan} is NaN (a run with NaN metrics is never recorded)"
    if not isinstance(record.get("epochs", []), list):
        return "epochs must be a list"
    collapse = record.get("collapse")
    if collapse is not None and not (isinstance(collapse, dict) and isinstance(collapse.get("reason"), (str, type(None)))):
        return f"collapse must be a mapping with a reason (a string or null), got {collapse!r}"
    return _config_problem(cfg)


def _config_problem(cfg: dict[str, Any]) -> str | None:
    """A configuration value of the wrong type (the check `pmlbal train --from-record` makes), or None."""
    problem = field_type_problem(cfg)
    return f"config.{problem}" if problem else None


def iter_records(results_dir: str | Path, on_error=None):
    """Yield valid records under `results_dir/runs`; invalid ones go to `on_error(message)`."""
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
        try:
            yield read_record(path)
        except RecordError as err:
            if on_error is not None:
                on_error(str(err))


def find_existing(results_dir: str | Path, key: str, seed: int) -> dict[str, Any] | None:
    """The record of a configuration and seed computed by the current code (`is_current`), with its
    "path", or None: a record of an earlier numerics version is not a result of this code."""
    for path in _same_run(Path(results_dir) / "runs", key, seed):
        try:
            record = read_record(path)
        except RecordError:
            continue
        if not is_current(record):
            continue
        record["path"] = str(path)
        return record
    return None


def migrate(results_dir: str | Path) -> list[tuple[Path, Path]]:
    """Rename the records of DIR/runs/ and DIR/failed/ whose file name does not hold their
    `config_key` (written before records were named by it) to `record_name`; their contents stay
    as they are (the run id is a name other places refer to). Returns the (old, new) paths renamed.
    Unreadable files are left alone (`pmlbal leaderboard` reports them)."""
    moved = []
    for folder in ("runs", "failed"):
        for path in sorted((Path(results_dir) / folder).glob("*.json")):
            try:
                record = json.loads(path.read_text())
                new = path.with_name(record_name(record))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if new != path:
                if new.exists():
                    raise FileExistsError(f"cannot rename {path} to {new}: that file exists")
                os.replace(path, new)
                moved.append((path, new))
    return moved


def best_epoch(epochs: list[dict[str, Any]], metric: str = "recall@1") -> dict[str, Any] | None:
    """The epoch with the highest `metric` among those evaluated on the whole model (cross-validation
    folds' own evaluations excluded), as {"epoch", "metric", "metrics"}; None unless two or more
    epochs were evaluated (then the final epoch is all there is)."""
    scored = [e for e in epochs if "metrics" in e and "fold" not in e and metric in e["metrics"]]
    if len(scored) < 2:
        return None
    top = max(scored, key=lambda e: (e["metrics"][metric], -e["epoch"]))  # the first of equals, as references keep it
    return {"epoch": top["epoch"], "metric": metric, "metrics": top["metrics"]}


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
