"""`pmlbal train` (one run, one record) and `pmlbal eval` (a saved model's metrics)."""

from __future__ import annotations

import os
from dataclasses import replace

import click

from .configs import base_config, given_fields, with_file
from .errors import fail, interrupted, user_errors
from .options import check_device_option, train_options


@click.command()
@train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True,
              help="pmlbal or PML loss class name, optionally with arguments: 'Name(key=value, ...)'.")
@click.option("--loss-arg", multiple=True, metavar="KEY=VALUE", help="Extra loss argument (repeatable).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--save-model", is_flag=True, help="Also save the trained model to RESULTS_DIR/models/ (for `pmlbal eval`).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file with the keys of a record's `config`; flags given override it.")
@click.option("--from-record", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Re-run the configuration of this run record (RESULTS_DIR/runs/*.json); flags given override it.")
@click.option("--resume/--fresh", default=True, show_default=True,
              help="Continue this configuration's interrupted run after its last finished epoch, as bench does "
                   "(--fresh: start again from epoch 1).")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None,
              help="Also log losses, loss terms, metrics and the configuration to TensorBoard under DIR "
                   "(pip install 'pmlbal[tensorboard]').")
@click.pass_context
def train(ctx, loss, loss_arg, seed, save_model, config_file, from_record, resume, tensorboard, **kw):
    """Train one model, evaluate it and write its run record.

    Several processes: `torchrun --nproc_per_node N -m pmlbal.cli train ...` (BATCH_SIZE is global).
    """
    from ..train import train as run_train

    if config_file and from_record:
        raise click.UsageError("give --config or --from-record, not both")
    cfg = None
    try:
        cfg = _train_config(ctx, loss, loss_arg, seed, save_model, config_file, from_record, kw)
        if resume and ctx.get_parameter_source("resume").name == "COMMANDLINE" and \
                int(os.environ.get("WORLD_SIZE", "1")) == 1:  # torchrun: train says why it cannot resume
            from ..resume import checkpoint_path

            if not checkpoint_path(cfg.resolved()).exists():  # e.g. a flag differs from the interrupted run's
                click.echo(f"nothing to resume ({checkpoint_path(cfg.resolved())} does not exist): "
                           f"starting from epoch 1")
        # One line per epoch on stdout comes from train itself (pmlbal.train.epoch_line).
        record = run_train(cfg, resume=resume, tensorboard=tensorboard, log=click.echo)
    except (*user_errors(), ImportError) as err:
        fail(err)
    except KeyboardInterrupt:
        _interrupted(ctx, cfg)
    if record is None:  # a non-zero torchrun rank: rank 0 reports
        return
    f = record["final"]
    click.echo(" ".join(f"{k}={v:.4f}" for k, v in f.items() if isinstance(v, float)))
    click.echo(f"record: {record['path']}")
    why = (record.get("collapse") or {}).get("reason")
    if why:
        click.echo(f"warning: this run collapsed: {why}. Its record says so; the board lists it under "
                   "'Collapsed runs', not in the ranking (a lower --lr usually helps).", err=True)
    for old in record.get("replaced", []):
        click.echo(f"replaced the earlier record of this configuration and seed: {old}")
    if record.get("model_path"):
        click.echo(f"model: {record['model_path']}")


def _interrupted(ctx, cfg) -> None:
    """Ctrl-C during `train`: the checkpoint of the last finished epoch (`pmlbal.resume`) stays where the
    same command (without --fresh) finds it."""
    from ..resume import checkpoint_path

    path = checkpoint_path(cfg.resolved()) if cfg is not None else None
    if path is not None and path.exists():
        kept = f"the checkpoint of the last finished epoch is kept: {path}"
    else:
        kept = "no epoch had finished, so no checkpoint is kept"
    interrupted(ctx, kept, drop=("--fresh",))


def _train_config(ctx, loss, loss_arg, seed, save_model, config_file, from_record, kw):
    """The run `train`'s options describe: flags, then a --config file's or --from-record's values under
    the flags given; --loss-arg adds to the file's loss arguments."""
    from ..bench import parse_loss_spec, parse_value
    from ..config_file import config_from_record, read_config_file

    name, kwargs = parse_loss_spec(loss)
    extra = {}
    for item in loss_arg:
        if "=" not in item:
            raise ValueError(f"--loss-arg expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        extra[key.strip()] = parse_value(value.strip())
    cfg = replace(base_config(**kw), loss=name, loss_kwargs={**kwargs, **extra}, seed=seed, save_model=save_model)
    values = read_config_file(config_file) if config_file else config_from_record(from_record) if from_record else None
    cfg = with_file(ctx, cfg, values)
    if values is not None and extra and "loss" not in given_fields(ctx):
        cfg = replace(cfg, loss_kwargs={**cfg.loss_kwargs, **extra})
    return cfg


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Split of the checkpoint's data set to evaluate on.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data set folder (default: the one the model was trained with).")
@click.option("--device", default="auto", show_default=True, callback=check_device_option,
              help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decoded-image cache.")
def eval_(checkpoint, split, root, device, cache_dir):
    """Evaluate a model saved by `pmlbal train --save-model`: Recall@K, MAP@R, R-precision, geometry."""
    from ..checkpoints import evaluate_checkpoint

    try:
        metrics = evaluate_checkpoint(checkpoint, split, root, device, cache_dir,
                                      warn=lambda m: click.echo(f"Warning: {m}", err=True))
    except user_errors() as err:
        fail(err)
    click.echo(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
