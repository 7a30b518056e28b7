"""How a command fails: one line naming what is wrong, never a traceback."""

from __future__ import annotations

import click


def fail(err: Exception) -> None:
    """Stop the command with `err`'s message as click's one-line error (exit 1)."""
    # One line: a message that spans lines (a wrapped library error) would read as a traceback.
    raise click.ClickException(" ".join(str(err).split()) or type(err).__name__)


def user_errors() -> tuple[type[BaseException], ...]:
    """What a command turns into a one-line error: bad input (ValueError), files and folders
    (OSError, including DatasetLayoutError and CorruptImageError), a diverged run, a locked run."""
    from ..loop import DivergedError
    from ..records import RunLockedError

    return (ValueError, OSError, DivergedError, RunLockedError)
