"""`pmlbal leaderboard`, and the `datasets` and `records` utility groups."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import SPLITS
from .errors import fail, interrupted, user_errors
from .options import DATASET, POSITIVE_INT, expand_user


@click.command()
@click.option("--dataset", type=DATASET, default=None, help="Only this data set (default: every one with records).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              callback=expand_user)
@click.option("--seeds", type=POSITIVE_INT, default=None, help="Seeds a complete row should have (rows with fewer are marked).")
@click.option("--no-plots", is_flag=True, help="Tables only.")
@click.option("--docs", "docs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also fill this file's <!-- board:DATASET:top N --> ... <!-- /board --> tables (repeatable).")
def leaderboard(dataset, results_dir, seeds, no_plots, docs):
    """Rebuild DIR/<dataset>.md/.csv, plots and DIR/README.md from DIR/runs/*.json."""
    from ..leaderboard import write_board_markers, write_leaderboards
    from ..records import check_writable, iter_records

    said: set[str] = set()

    def warn(message: str) -> None:  # the boards and the docs' tables read the records apart: say each once
        if message not in said:
            said.add(message)
            click.echo(message, err=True)

    try:
        check_writable(results_dir, create=False)  # before reading hundreds of records
        if not Path(results_dir, "runs").is_dir():  # a mistyped folder: nothing to read, and nothing is created
            raise ValueError(f"no run records: {Path(results_dir) / 'runs'} does not exist")
        boards = write_leaderboards(results_dir, dataset, expected_seeds=seeds, plots=not no_plots, warn=warn)
        for path in write_board_markers(docs, results_dir, warn=warn):
            click.echo(f"updated the board tables of {path}", err=True)
    except (OSError, ValueError) as err:
        fail(err)
    if not boards:
        held = sorted({r["config"]["dataset"] for r in iter_records(results_dir, on_error=lambda msg: None)})
        what = f"{dataset} test-split records" if dataset else "usable run records"
        raise click.ClickException(f"no {what} under {Path(results_dir) / 'runs'}"
                                   + (f"; it holds records of: {', '.join(held)}" if held else ""))
    for ds in boards:
        click.echo(Path(results_dir, f"{ds}.md").read_text())


@click.group()
def datasets():
    """Data set utilities."""


@datasets.command("check")
@click.argument("name", type=DATASET)
@click.argument("old_root", metavar="", type=click.Path(file_okay=False), required=False)
@click.option("--root", type=click.Path(file_okay=False), default=None, callback=expand_user,
              help="Folder holding the data set's official layout, as for train (not needed for digits).")
@click.option("--decode", is_flag=True, help="Also open every image (slow), reporting unreadable files by path.")
def datasets_check(name, old_root, root, decode):
    """Verify NAME's layout under --root: image and class counts per split; exit 1 naming what is wrong."""
    from ..data import CorruptImageError, DatasetLayoutError, create
    from ..evaluation import check_retrievable

    if old_root is not None:  # the positional form of earlier releases
        if root is not None:
            raise click.UsageError("give the root once, as --root")
        click.echo(f"note: `datasets check {name} ROOT` is deprecated; use --root {old_root}", err=True)
        root = old_root

    try:
        for split in SPLITS:
            ds = create(name, root, split)
            missing = [p for p in ds.paths if ds.paths_are_files and not Path(p).is_file()]
            if missing:
                raise DatasetLayoutError(f"{name}: {len(missing)} image file(s) missing, first: {missing[0]}")
            if decode:
                for i in range(len(ds)):
                    ds.load_image(i)
            click.echo(f"{name} {split:<9} {len(ds):>7} images {ds.num_classes:>6} classes")
            if split in ("test", "val") and not check_retrievable(ds.labels):
                raise DatasetLayoutError(f"{name}: every class of the {split} split has a single image, so no query "
                                         f"has a same-class reference and every retrieval metric would be NaN")
        for line in getattr(ds, "report", lambda: [])():  # what a data set says of its own sources
            click.echo(line)
    except (DatasetLayoutError, CorruptImageError, ValueError) as err:
        fail(err)


@click.group()
def records():
    """Run record utilities."""


@records.command("migrate")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              callback=expand_user)
def records_migrate(results_dir):
    """Rename DIR/runs/ and DIR/failed/ records written before records were named by their key
    (<dataset>-<loss>-<config_key>-s<seed>-<id>.json), so that look-ups find them; run once."""
    from ..records import migrate

    try:
        moved = migrate(results_dir)
    except OSError as err:
        fail(err)
    for old, new in moved:
        click.echo(f"{old} -> {new.name}")
    click.echo(f"{len(moved)} record(s) renamed")


@records.command("remake")
@click.option("--dataset", type=DATASET, default=None, help="Only this data set's records (default: every one).")
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True,
              help="The runs evaluated on test (the boards' runs), or all of them, tuning trials included.")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              callback=expand_user)
@click.pass_context
def records_remake(ctx, dataset, split, results_dir):
    """Re-train, with this code, every run whose records an earlier numerics version computed (stale), its
    new record replacing the old; exit 1 if some are left (diverged, or another process trains them)."""
    from ..remake import remake

    try:
        done, left = remake(results_dir, dataset, None if split == "all" else split, log=click.echo)
    except user_errors() as err:
        fail(err)
    except KeyboardInterrupt:
        interrupted(ctx, "re-made runs keep their new records and the interrupted one the checkpoint of its last "
                         f"finished epoch ({Path(results_dir) / 'runs'}/*.ckpt)")
    click.echo(f"{len(done) + len(left)} stale run(s): {len(done)} re-made, {len(left)} left"
               + (" (diverged, or trained by another process)" if left else ""))
    if left:
        ctx.exit(1)


@records.command("prune")
@click.option("--study", "studies", multiple=True, metavar="NAME",
              help="Retire this study's tuned rows (repeatable); default: those of studies no longer in --storage.")
@click.option("--storage", default=None, help="The studies' Optuna storage (default: sqlite:///RESULTS_DIR/tuning.db).")
@click.option("--stale", "stale_keys", multiple=True, metavar="KEY",
               help="Retire the stale records (an earlier numerics version's) of this configuration key "
                    "(the boards' CSV column config_key; repeatable) to DIR/pruned/stale/, instead of studies.")
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              callback=expand_user)
def records_prune(studies, storage, stale_keys, dry_run, results_dir):
    """Move the test records of retired or deleted tuning studies' picks from DIR/runs/ to
    DIR/pruned/<study>/, or with --stale a configuration's stale records to DIR/pruned/stale/ (kept, off
    the boards); then rebuild the boards with `pmlbal leaderboard`."""
    from ..prune import prune, prune_stale

    if stale_keys and (studies or storage):
        fail(click.UsageError("--stale retires stale records, --study/--storage a study's: give one or the other"))
    try:
        if stale_keys:
            moved = prune_stale(results_dir, stale_keys, dry_run, log=click.echo)
        else:
            moved = prune(results_dir, storage or f"sqlite:///{results_dir}/tuning.db", studies, dry_run, log=click.echo)
    except user_errors() as err:
        fail(err)
    click.echo(f"{len(moved)} record(s) {'would move' if dry_run else 'moved'}")
