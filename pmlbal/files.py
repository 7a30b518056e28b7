"""Atomic file writes: a crash or a full disk never leaves a half-written file under the final name.

Temporary files are named `.<name>.[<random>.]<pid>.tmp` beside their target, so the leftovers of a
killed process can be told from a live writer's (`pmlbal.procs.remove_dead_temporaries`), and a
finished file gets the mode an ordinary `open` would give it (0666 less the umask), not mkstemp's 0600:
other users of a shared results folder can read the records and boards."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


#: The mode `open` gives a new file in this process.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file in `path`'s folder, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode()))


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """For writers that need a file name (torch.save, savefig, a memory map): yield a temporary
    path beside `path` (``.<name>.<pid><suffix>``, so a killed process's leftovers can be found);
    when the block ends, fsync it and rename it over `path`; when it raises, remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: The first bytes of every file `torch.save` writes (a zip archive).
TORCH_FILE_MAGIC = b"PK\x03\x04"


def describe_load_error(err: BaseException, path: str | os.PathLike | None = None) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, in one line and without torch's advice
    to retry with weights_only=False (which runs whatever a damaged or foreign file holds). With `path`,
    a file that does not even start as torch's files do is called that, whatever torch's parser said
    of its bytes (random bytes raise anything from an UnpicklingError to a KeyError there)."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                head = f.read(len(TORCH_FILE_MAGIC))
        except OSError:
            head = TORCH_FILE_MAGIC
        if head != TORCH_FILE_MAGIC:
            return "it is not a file torch wrote: damaged, or something else under this name"
    text = str(err)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values, so it is not a file pmlbal wrote"
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
