"""`pmlbal bench` (losses x seeds, then the leaderboard) and `pmlbal sweep` (balance x batch size)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .configs import base_config, shared_file, with_file
from .errors import fail, interrupted, user_errors
from .options import POSITIVE_INT, default_storage, train_options


@click.command()
@train_options
@click.option("--losses", default="default", show_default=True,
              help="'default' (the main job's losses), 'all' (every pmlbal loss) or a comma list of specs.")
@click.option("--seeds", type=POSITIVE_INT, default=1, show_default=True, help="Seeds per loss.")
@click.option("--config", "config_", multiple=True, metavar="default|tuned|FILE",
              help="'tuned': each loss's best configuration from a tuning study in --storage (default if none); "
                   "FILE: a YAML or JSON file of the options the runs share (flags given override it). "
                   "Repeat to combine: --config tuned --config FILE.  [default: default]")
@click.option("--storage", default=None,
              help="Where --config tuned looks for tuning studies (default: sqlite:///RESULTS_DIR/tuning.db).")
@click.option("--study", "study_name", default=None,
              help="--config tuned: take the pick of this study (default: each loss's most recent study).")
@click.pass_context
def bench(ctx, losses, seeds, config_, storage, study_name, **kw):
    """Train every loss for every seed (skipping recorded runs, resuming interrupted ones), then print the
    leaderboard."""
    from ..bench import DEFAULT_LOSSES, run_bench, split_specs
    from ..leaderboard import board_summary, write_leaderboards
    from ..registry import list_losses

    tuned, files = _config_words(config_)
    specs = list(DEFAULT_LOSSES) if losses == "default" else list_losses() if losses == "all" else split_specs(losses)
    base = None
    try:
        base = with_file(ctx, base_config(**kw), shared_file(files[0] if files else None, "bench"))
        storage = storage or default_storage(base.results_dir)
        if study_name and not tuned:
            raise ValueError("--study is for --config tuned")
        records = run_bench(base, specs, seeds, log=click.echo, tuned_storage=storage if tuned else None,
                            tuned_study=study_name)
        boards = write_leaderboards(base.results_dir, base.dataset, expected_seeds=seeds, warn=click.echo)
    except user_errors() as err:
        fail(err)
    except KeyboardInterrupt:
        _interrupted(ctx, base.results_dir if base else kw["results_dir"])
    click.echo(Path(base.results_dir, f"{base.dataset}.md").read_text() if boards else "no records")
    for line in board_summary(boards.get(base.dataset, []), base.dataset, base.results_dir) if boards else []:
        click.echo(line)
    if not records:  # every run diverged (or failed before): a script must not read this as success
        fail(RuntimeError(f"no run succeeded: none of the {len(specs)} loss(es) x {seeds} seed(s) has a record; "
                          f"see {Path(base.results_dir) / 'failed'}"))


def _interrupted(ctx, results_dir: str) -> None:
    """Ctrl-C during `bench` or `sweep`: the same command skips what is recorded and resumes the rest."""
    interrupted(ctx, f"finished runs keep their records and the interrupted one the checkpoint of its last "
                     f"finished epoch ({Path(results_dir) / 'runs'}/*.ckpt)")


def _config_words(config_: tuple[str, ...]) -> tuple[bool, list[str]]:
    """`bench --config` values: whether 'tuned' was given, and the file (at most one)."""
    words = [c for c in config_ if c in ("default", "tuned")]
    files = [c for c in config_ if c not in ("default", "tuned")]
    if len(set(words)) > 1 or len(files) > 1:
        raise click.BadParameter(f"at most one of default/tuned and one FILE, got {', '.join(config_)}",
                                 param_hint="--config")
    for f in files:
        if not Path(f).is_file():
            raise click.BadParameter(f"neither default, tuned nor an existing file: {f!r}", param_hint="--config")
    return "tuned" in words, files


@click.command()
@train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True, help="Loss class name (must take 'balance').")
@click.option("--balance", "balances", default="0.25,0.5,1,2,4", show_default=True, help="Comma list of balances.")
@click.option("--batch-sizes", default=None, help="Comma list of batch sizes (default: the data set's).")
@click.option("--seeds", type=POSITIVE_INT, default=1, show_default=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file of the options the runs share (flags given override it).")
@click.pass_context
def sweep(ctx, loss, balances, batch_sizes, seeds, config_file, **kw):
    """Recall@1 across balance x batch size: one run per cell, then the leaderboard and its plot."""
    from ..bench import run_bench
    from ..leaderboard import write_leaderboards

    try:
        bals = [float(b) for b in balances.split(",")]
        sizes = [int(b) for b in batch_sizes.split(",")] if batch_sizes else None
    except ValueError:
        fail(ValueError(f"--balance and --batch-sizes take comma lists of numbers, got {balances!r} / {batch_sizes!r}"))
    shared = None
    try:
        shared = with_file(ctx, base_config(**kw), shared_file(config_file, "sweep"))
        for size in sizes or [shared.batch_size]:
            base = replace(shared, batch_size=size)
            run_bench(base, [f"{loss}(balance={b})" for b in bals], seeds, log=click.echo)
        write_leaderboards(shared.results_dir, shared.dataset, expected_seeds=seeds, warn=click.echo)
    except user_errors() as err:
        fail(err)
    except KeyboardInterrupt:
        _interrupted(ctx, shared.results_dir if shared else kw["results_dir"])
    click.echo(f"plot: {Path(shared.results_dir, shared.dataset + '_balance.png')}")
