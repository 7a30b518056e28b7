"""Whether a process still runs: for lock files, tuning workers and temporary files left by killed runs.

One owner format for all of them, "host:pid" (`owner_id`), and one liveness check (`owner_alive`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while process `pid` of this host runs (a zombie, killed but not yet reaped, counts as
    gone); True as well when that cannot be told (another user's process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def owner_id() -> str:
    """This process as the owner of a lock or a running trial: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the owner written by `owner_id` still runs. Another host's process cannot be checked
    from here and counts as alive; text that is not "host:pid" (a half-written file) as gone."""
    host, sep, pid = owner.strip().rpartition(":")
    if not sep or not host or not pid.isdigit():
        return False
    return host != socket.gethostname() or pid_alive(int(pid))


def remove_dead_temporaries(folder: str | Path, pattern: str = ".*.tmp") -> list[Path]:
    """Delete the temporary files matching `pattern` in `folder` whose writer, a process of this host
    named in the file (`.<name>.[...].<pid>.tmp`, as `pmlbal.files` names them), is gone: what a kill
    during a write leaves (a checkpoint's can be 60 MB, an image cache's gigabytes). Returns them."""
    removed = []
    for tmp in Path(folder).glob(pattern):
        pid = tmp.name[: -len(".tmp")].rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:  # another process cleaned it first
                pass
    return removed
