"""Optuna storage opened from a URL: `sqlite:///PATH`, `journal:PATH` or an SQLAlchemy URL such as
`postgresql://...`; a bad URL, file or server fails here, in one line, before any trial starts.
"""

from __future__ import annotations

from pathlib import Path

import optuna


def open_storage(url: str, read_only: bool = False) -> optuna.storages.BaseStorage:
    """`sqlite:///PATH` (its folder is made), `journal:PATH` (an append-only journal file, for
    several processes sharing a file system), or any SQLAlchemy URL such as `postgresql://...`
    (several machines). `read_only` (looking, as `tune --show`): a SQLite file is opened read-only
    and must already hold Optuna's tables, so that looking never creates or alters a file."""
    if read_only and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return _open_sqlite_read_only(url, Path(url[len("sqlite:///"):]))
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        _make_parent(url, path)
        _check_journal(url, path)
        try:
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as err:
            raise ValueError(f"cannot open storage {url}: {err.strerror or err}") from None
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite:///"):
        _make_parent(url, Path(url[len("sqlite:///"):]))
    if "://" not in url:
        raise ValueError(f"storage {url!r} is not a URL: use sqlite:///PATH, journal:PATH or postgresql://...")
    try:
        # Connect now: a bad dialect, a missing driver, an unreachable server or a file that is
        # not a database should stop the command here, in one line, before any trial starts.
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # SQLAlchemy and DB-API errors have no common base
        shown = _hide_password(url)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, ImportError) and url.startswith("postgresql"):
            reason += " (pip install 'pmlbal[postgres]')"
        raise ValueError(f"cannot open storage {shown}: {reason}") from None


def _open_sqlite_read_only(url: str, path: Path) -> optuna.storages.BaseStorage:
    import sqlite3

    if not path.is_file():
        raise ValueError(f"cannot open storage {url}: {path} does not exist")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"cannot open storage {url}: {err}") from None
    if not {"studies", "trials", "version_info"} <= tables:
        raise ValueError(f"cannot open storage {url}: {path} is a SQLite file without Optuna's tables "
                         f"(no study was ever stored there)")
    try:
        return optuna.storages.RDBStorage(f"sqlite:///file:{path}?mode=ro&uri=true")
    except Exception as err:  # SQLAlchemy and DB-API errors have no common base
        raise ValueError(f"cannot open storage {url}: {str(err).strip().splitlines()[0]}") from None


def _make_parent(url: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot open storage {url}: cannot make its folder {path.parent} "
                         f"({err.strerror or err})") from None


def _check_journal(url: str, path: Path) -> None:
    """Read the journal once now: a file that is not an Optuna journal fails here, naming its line,
    instead of with a bare JSON error at the first study lookup. A last line without its newline
    is one another process is still writing (Optuna skips it too)."""
    import json

    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    break
                try:
                    entry = json.loads(line)
                except ValueError as err:
                    raise ValueError(f"cannot open storage {url}: not an Optuna journal file (line {n}: {err})") from None
                if not isinstance(entry, dict) or "op_code" not in entry:
                    raise ValueError(f"cannot open storage {url}: not an Optuna journal file (line {n} has no op_code)")
    except OSError as err:
        raise ValueError(f"cannot open storage {url}: {err.strerror or err}") from None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def storage_exists(url: str) -> bool:
    """False for a sqlite or journal file that is not there (looking must not create it)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).is_file()
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).is_file()
    return True
