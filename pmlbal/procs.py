"""Whether a process of this host still runs: for lock files and temporary files left by killed runs."""

from __future__ import annotations

import os


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
