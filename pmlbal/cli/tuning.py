"""`pmlbal tune` (a study on the validation split, then the retrained pick) and `pmlbal tune-worker`."""

from __future__ import annotations

from pathlib import Path

import click

from .configs import base_config
from .errors import fail, interrupted, user_errors
from .options import (LEAD_METRICS, POSITIVE_FLOAT, POSITIVE_INT, check_device_option, check_study_name, expand_user,
                      default_storage, train_options, without)


@click.command()
@without("eval_split", "val_fold")  # tuning scores on the class-disjoint validation split, every fold
@train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True,
              help="Loss to tune, optionally with arguments that every trial shares and that are the defaults of its "
                   "coordinates: 'Name(key=value, ...)' (see pmlbal.tune.search_space).")
@click.option("--budget", type=POSITIVE_INT, default=30, show_default=True,
              help="Training runs at most (a trial on K validation folds is K runs).")
@click.option("--search", type=click.Choice(["cd", "tpe", "gp", "random", "grid"]), default="cd", show_default=True,
              help="Coordinate descent, or Optuna's TPE / Gaussian process (GPSampler) / random / grid.")
@click.option("--storage", default=None,
              help="Optuna storage: sqlite:///PATH, journal:PATH (several processes) or postgresql://... (several "
                   "machines); default sqlite:///RESULTS_DIR/tuning.db.")
@click.option("--study", "study_name", default=None, callback=check_study_name, help="Study name (default: DATASET-LOSS-SEARCH); resumed if it exists.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--space", multiple=True, metavar="NAME=LOW:HIGH", help="Override a coordinate's range (repeatable).")
@click.option("--x0", "x0_items", multiple=True, metavar="NAME=VALUE",
              help="A coordinate's default, the study's first point and the pick's reference (repeatable; default: "
                   "--loss's arguments, the data set's batch size and lr, the loss class's defaults).")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Trials run at once: 1 = in this process; N > 1 = N local worker processes (one per GPU when "
                   "there are several); 0 = none here, `pmlbal tune-worker` processes elsewhere do the work.")
@click.option("--final/--no-final", default=True, show_default=True,
              help="Retrain the pick on train and evaluate it once on test (recorded).")
@click.option("--show", is_flag=True, help="Print the study's trajectory and write its plot; runs nothing.")
@click.option("--grace", type=POSITIVE_FLOAT, default=120.0, show_default=True,
              help="Seconds without a heartbeat before a running trial is declared lost and queued again.")
@click.option("--metric", type=click.Choice(LEAD_METRICS), default=None,
              help="Validation metric to maximise (default: the data set's lead metric, e.g. map_at_r on digits).")
@click.option("--confirm", is_flag=True,
              help="tpe/gp/random: spend the last budget/4 runs re-running the 3 best points and the defaults, as cd does.")
@click.option("--tune-epochs", type=POSITIVE_INT, default=None,
              help="Epochs of each validation run, fewer than the final run's --epochs to save time "
                   "(recorded in the study; default: --epochs, the final run's length).")
@click.option("--engine", type=click.Choice(["optuna", "ray"]), default="optuna", show_default=True,
              help="Who runs the trials: pmlbal's coordinator and workers on the Optuna storage, or a Ray Tune "
                   "experiment (pip install 'pmlbal[ray]'; docs/tuning.md, 'Ray Tune engine'); the study is the same.")
@click.option("--cpus-per-trial", type=POSITIVE_FLOAT, default=1.0, show_default=True,
              help="--engine ray: CPUs Ray reserves for each trial.")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="--engine ray: GPUs Ray reserves for each trial (fractions share a GPU; 0: trials train on the CPU).")
@click.option("--address", default=None,
              help="--engine ray: the Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); default: start a "
                   "local one.")
@click.pass_context
def tune(ctx, loss, budget, search, storage, study_name, seed, space, x0_items, workers, final, show, grace, metric,
         confirm, tune_epochs, engine, cpus_per_trial, gpus_per_trial, address, **kw):
    """Tune LOSS on class-disjoint validation folds of the train classes (--val-folds, default per data
    set), starting from the defaults; the pick is the defaults unless a confirmed point beats them on
    paired runs (docs/tuner.md)."""
    from dataclasses import replace

    from ..bench import parse_loss_spec
    from ..tune import open_storage, pick
    from ..tune.budget import spec_folds
    from ..tune.optuna import SPEC
    from ..tune.progress import format_params, runs_text
    from ..tune.report import versus_defaults
    from ..tune.run import retrain_best, storage_exists
    from ..tune.study import tune_study

    storage = storage or default_storage(kw["results_dir"])
    try:
        loss_name, loss_kwargs = parse_loss_spec(loss)
    except ValueError as err:
        fail(err)
    name = study_name or f"{kw['dataset']}-{loss_name}-{search}"
    try:
        if show:
            if not storage_exists(storage):  # looking must not create a database
                raise ValueError(f"no study {name!r}: {storage} does not exist")
            return _show_study(open_storage(storage, read_only=True), name, kw["results_dir"])
        base = replace(base_config(**{**kw, "eval_split": "val"}), loss=loss_name, loss_kwargs=loss_kwargs)
        study = tune_study(base, loss_name, budget, search=search, storage=storage, study_name=name, seed=seed,
                           space=_parse_space(space), x0=_parse_x0(x0_items), val_folds=kw["val_folds"],
                           workers=workers, grace=grace, metric=metric, confirm=confirm, tune_epochs=tune_epochs,
                           engine=engine, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                           address=address, log=click.echo)
    except user_errors() as err:
        fail(err)
    except KeyboardInterrupt:
        interrupted(ctx, f"study {name} keeps its finished trials (the interrupted one runs again)")
    best = pick(study)
    folds = spec_folds(study.user_attrs.get(SPEC))
    if best is None:
        raise click.ClickException(f"study {name!r}: no trial finished")
    click.echo(f"study {name}: {len(study.trials)} trials; pick: val {best.value:.4f} "
               f"(mean of {runs_text(best.runs, folds)}) at {format_params(best.params)}; {versus_defaults(best)}")
    collapsed = next((t.user_attrs["collapsed"] for t in study.trials
                      if t.number in best.trials and t.user_attrs.get("collapsed")), None)
    if collapsed:  # not a configuration to train: say so and stop before the final run
        raise click.ClickException(f"study {name}: the pick collapsed ({collapsed}); no configuration of this "
                                   "study trains a usable embedding: narrow --space (e.g. the lr) and tune again")
    if final:
        try:
            record = retrain_best(study, storage, results_dir=kw["results_dir"], cache_dir=kw["cache_dir"],
                                  device=kw["device"], progress=True)
        except user_errors() as err:
            fail(err)
        except KeyboardInterrupt:
            interrupted(ctx, f"study {name} is complete; only its final retrain starts again")
        f = record["final"]
        click.echo(f"the pick on test: recall@1 {f['recall@1']:.4f} map@r {f['map_at_r']:.4f} "
                   f"(record {record['path']})")


def _parse_space(items) -> dict[str, tuple[float, float]]:
    out = {}
    for item in items:
        name, _, rng = item.partition("=")
        low, _, high = rng.partition(":")
        try:
            out[name.strip()] = (float(low), float(high))
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected NAME=LOW:HIGH, e.g. balance=0.25:4", param_hint="--space")
    return out


def _parse_x0(items) -> dict[str, float]:
    from ..bench import parse_value

    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE, e.g. balance=2", param_hint="--x0")
        out[name.strip()] = parse_value(value.strip())
    return out


def _show_study(storage, name: str, results_dir: str) -> None:
    import optuna

    from ..tune.report import format_trajectory, plot_trajectory

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise click.ClickException(f"no study {name!r} in this storage; pass --study (see `optuna studies --storage URL`)")
    click.echo(format_trajectory(study))
    if any(t.value is not None for t in study.trials):
        click.echo(f"plot: {plot_trajectory(study, Path(results_dir, f'tuning-{name}.png'))}")


@click.command("tune-worker")
@click.option("--storage", required=True, help="The study's storage URL (as given to `pmlbal tune`).")
@click.option("--study", "study_name", required=True, callback=check_study_name, help="The study to work for.")
@click.option("--device", default=None, callback=check_device_option, help="Override the study's device (e.g. cuda:1).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              callback=expand_user)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, callback=expand_user)
@click.option("--heartbeat", type=POSITIVE_FLOAT, default=None,
              help="Seconds between heartbeats (default: a quarter of the coordinator's --grace, at most 30).")
@click.option("--idle-timeout", type=POSITIVE_FLOAT, default=None,
              help="Leave after this many seconds with nothing queued (default: wait for the search to end).")
@click.option("--coordinator", default=None, metavar="HOST:PID",
              help="Leave when this process (the `pmlbal tune` that started the worker) is gone.")
def tune_worker(storage, study_name, device, results_dir, cache_dir, heartbeat, idle_timeout, coordinator):
    """Claim a study's queued trials, train each and report, until the search is done."""
    import os

    import optuna

    from ..tune import open_storage
    from ..tune.budget import sampling_budget, spec_trials
    from ..tune.run import load_spec, make_sampler, objective_from_spec
    from ..tune.workers import GRACE, heartbeat_for, work

    try:
        store = open_storage(storage)
        try:
            study = optuna.load_study(study_name=study_name, storage=store)
        except KeyError:
            raise ValueError(f"no study {study_name!r} in {storage}; start it with `pmlbal tune --workers 0`")
        grace = float(study.user_attrs.get(GRACE, 120.0))
        if heartbeat is not None and heartbeat > grace / 2:
            raise ValueError(f"--heartbeat {heartbeat:g} s: the coordinator declares a trial lost after {grace:g} s "
                             f"without one; give at most {grace / 2:g} (default {heartbeat_for(grace):g})")
        spec = load_spec(study)
        if spec.search != "cd":  # workers sample new trials themselves; distinct seeds, distinct samples
            study.sampler = make_sampler(spec.search, spec.dims, spec.seed + os.getpid(), spec_trials(spec))
        overrides = {"results_dir": results_dir, "cache_dir": cache_dir, "progress": False}
        if device:
            overrides["device"] = device
        objective = objective_from_spec(spec, **overrides)
    except user_errors() as err:
        fail(err)
    n = work(study, objective, heartbeat=heartbeat_for(grace) if heartbeat is None else heartbeat,
             coordinator=coordinator, sample_new=spec.search != "cd",
             budget=sampling_budget(spec_trials(spec), spec.confirm, spec.search),
             total=spec_trials(spec), idle_timeout=idle_timeout, log=click.echo)
    click.echo(f"worker done: {n} trials run")
