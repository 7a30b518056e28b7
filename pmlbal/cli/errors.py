"""How a command fails: one line naming what is wrong, never a traceback."""

from __future__ import annotations

import sys

import click


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command line: one line, ``warning: MESSAGE``, on stderr and above any
    progress bar (Python's own adds the file, the line number and a source line a user cannot act on)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    try:
        from tqdm import tqdm

        tqdm.write(f"warning: {text}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - a warning must never stop a command
        print(f"warning: {text}", file=sys.stderr)


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


#: Key of `ctx.meta` under which the group `main` keeps the arguments `pmlbal` was called with.
ARGV = "pmlbal.argv"


def interrupted(ctx: click.Context, kept: str, add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> None:
    """Ctrl-C: one line on stderr saying what the interrupted work kept and the command that continues
    it (the arguments given, less `drop`, plus `add` where not given), then exit 130 (128 + SIGINT), as a
    shell does, instead of click's bare "Aborted!"."""
    import shlex

    argv = [a for a in ctx.meta.get(ARGV, ctx.command_path.split()[1:]) if a not in drop]
    argv += [a for a in add if a not in argv]
    click.echo(f"Interrupted: {kept}; to continue, run: {shlex.join(['pmlbal', *argv])}", err=True)
    ctx.exit(130)
