"""The `pmlbal` command line: thin click commands over the library.

`main` is the click group (the `pmlbal` entry point); each module holds one family of commands:
`training` (train, eval), `benchmarking` (bench, sweep), `tuning` (tune, tune-worker) and
`utilities` (leaderboard, datasets, records). `options` holds the options they share, `configs`
turns those into a `TrainConfig`, `errors` the one-line failures. Importing this package imports
nothing heavier than `import pmlbal` does: each command imports what it runs when it runs, so
`pmlbal --help` starts as fast as the package.
"""

from __future__ import annotations

import click

from .benchmarking import bench, sweep
from .errors import ARGV, show_warning
from .training import eval_, train
from .tuning import tune, tune_worker
from .utilities import datasets, leaderboard, records

__all__ = ["main"]


class _Main(click.Group):
    """The group that keeps its arguments (`ctx.meta[ARGV]`): an interrupted command names the command
    line that continues it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        import warnings

        said: set[str] = set()

        def once(message, category, filename, lineno, file=None, line=None):
            # One line each, above the progress bar, and each text once a command: Python's own registry
            # forgets what it showed whenever a library changes the warning filters.
            if str(message) not in said:
                said.add(str(message))
                show_warning(message, category, filename, lineno, file, line)

        with warnings.catch_warnings():
            warnings.showwarning = once
            return super().invoke(ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pmlbal")
def main() -> None:
    """pmlbal: balanced, fast, tuned contrastive losses for pytorch-metric-learning."""


for _command in (train, eval_, bench, sweep, tune, tune_worker, leaderboard, datasets, records):
    main.add_command(_command)
