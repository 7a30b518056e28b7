"""The `pmlbal` command line: thin click commands over the library."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from .data import SPLITS
from .data.cache import CACHE_MODES
from .models import HEAD_INITS, POOLINGS
from .protocols import list_protocols
from .registry import list_batch_sources, list_datasets

DATASET = click.Choice(list_datasets())
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)


class PositiveFloatOrNone(click.ParamType):
    """A float > 0, or 'none' (unset: what a preset set is switched off)."""

    name = "float|none"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "none":
            return value
        try:
            v = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)
        if not v > 0:
            self.fail(f"{value!r} must be > 0", param, ctx)
        return v


POSITIVE_FLOAT_OR_NONE = PositiveFloatOrNone()


def _fail(err: Exception) -> None:
    # One line: a message that spans lines (a wrapped library error) would read as a traceback.
    raise click.ClickException(" ".join(str(err).split()) or type(err).__name__)


def _errors() -> tuple[type[BaseException], ...]:
    """What a command turns into a one-line error: bad input (ValueError), files and folders
    (OSError, including DatasetLayoutError and CorruptImageError), a diverged run, a locked run."""
    from .records import RunLockedError
    from .train import DivergedError

    return (ValueError, OSError, DivergedError, RunLockedError)


def _device(ctx, param, value):
    from .train import check_device

    try:
        return check_device(value) if value is not None else None
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _train_options(f):
    options = [
        click.option("--dataset", type=DATASET, default="digits", show_default=True, help="Data set to train and evaluate on."),
        click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder holding the data set's official layout (not needed for digits)."),
        click.option("--protocol", type=click.Choice(list_protocols()), default=None,
                     help="A published recipe's values (docs/protocols.md); other flags override them."),
        click.option("--backbone", default=None,
                     help="timm model name, optionally with a weights tag: resnet50.tv_in1k (default: per data set)."),
        click.option("--pretrained", default=None,
                     help="'timm', a local state-dict file, or 'none' (random init, the default)."),
        click.option("--embedding-dim", type=POSITIVE_INT, default=None, help="Embedding size."),
        click.option("--epochs", type=POSITIVE_INT, default=None, help="Training epochs."),
        click.option("--batch-size", type=POSITIVE_INT, default=None, help="Batch size (P classes x m samples)."),
        click.option("--samples-per-class", type=click.IntRange(min=2), default=None, help="m, samples per class in a batch."),
        click.option("--lr", type=POSITIVE_FLOAT, default=None, help="Learning rate (of the trunk)."),
        click.option("--head-lr", type=POSITIVE_FLOAT_OR_NONE, default=None, help="Embedding head's learning rate [lr]."),
        click.option("--loss-lr", type=POSITIVE_FLOAT_OR_NONE, default=None,
                     help="Learning rate of the loss's own parameters, e.g. proxies [100 x lr]."),
        click.option("--optimizer", type=click.Choice(["adamw", "adam", "rmsprop"]), default=None, help="[adamw]"),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="[1e-4]"),
        click.option("--schedule", type=click.Choice(["cosine", "constant", "step"]), default=None,
                     help="After the warm-up: cosine to 0, constant, or x --lr-gamma every --lr-step-epochs [cosine]."),
        click.option("--warmup-epochs", type=click.FloatRange(min=0), default=None, help="Linear lr warm-up [1]."),
        click.option("--lr-step-epochs", type=POSITIVE_INT, default=None, help="--schedule step: epochs per step [10]."),
        click.option("--lr-gamma", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="--schedule step: factor per step [0.5]."),
        click.option("--freeze-trunk-epochs", type=click.IntRange(min=0), default=None,
                     help="Train only the head and the loss's parameters for the first N epochs [0]."),
        click.option("--clip-grad-value", type=POSITIVE_FLOAT_OR_NONE, default=None,
                     help="Clip each gradient element to [-V, V] [none]."),
        click.option("--pooling", type=click.Choice(POOLINGS), default=None,
                     help="Backbone pooling; avg+max sums GAP and GMP (Proxy-Anchor) [avg]."),
        click.option("--head-init", type=click.Choice(HEAD_INITS), default=None, help="[default]"),
        click.option("--cache-size", type=POSITIVE_INT, default=None, help="Cached image side in px (default: per data set)."),
        click.option("--input-size", type=POSITIVE_INT, default=None, help="Crop size fed to the model (default: per data set)."),
        click.option("--crop-scale", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Smallest area fraction of a training crop (default: per data set)."),
        click.option("--hflip/--no-hflip", default=None,
                     help="Random horizontal flips of training crops (default: per data set; glyphs: off)."),
        click.option("--cache-mode", type=click.Choice(CACHE_MODES), default=None,
                     help="Training views from a centre square, or the whole image with its aspect kept [square]."),
        click.option("--eval-on", type=click.Choice(["head", "backbone"]), default=None,
                     help="Evaluate the head's embeddings or the pooled backbone output [head]."),
        click.option("--cv-folds", type=click.IntRange(min=0), default=None,
                     help="k >= 2: k models on class-disjoint folds of the train classes, embeddings concatenated [0]."),
        click.option("--lead-metric", type=click.Choice(["recall@1", "map_at_r", "r_precision", "precision_at_1"]),
                     default=None, help="Metric that picks the best epoch with --eval-every [recall@1]."),
        click.option("--eval-split", type=click.Choice(["test", "val"]), default="test", show_default=True,
                     help="'val' (class-disjoint, carved from train classes) for tuning, 'test' to report."),
        click.option("--train-split", type=click.Choice(["train", "train-sub"]), default=None,
                     help="Training split [train; train-sub with --eval-split val]."),
        click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Evaluate every N epochs as well as at the end (0: only at the end)."),
        click.option("--sampler", type=click.Choice(list_batch_sources()), default=None,
                     help="Batches: random P classes x m (m-per-class, the default), spectral clusters of confusable "
                          "classes, or random samples."),
        click.option("--resample-every", type=POSITIVE_INT, default=1, show_default=True,
                     help="With --sampler spectral: re-embed the training set and rebuild batches every N epochs."),
        click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
        click.option("--freeze-bn/--no-freeze-bn", default=None, help="Freeze BatchNorm statistics and affine parameters."),
        click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
                     help="Run records go to DIR/runs/."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Decoded-image cache (default ~/.cache/pmlbal or $PMLBAL_CACHE)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _without(*names: str):
    """Drop options of a shared group that this command ignores, so its --help does not offer them."""
    def decorator(f):
        f.__click_params__ = [p for p in getattr(f, "__click_params__", []) if p.name not in names]
        return f

    return decorator


def _base_config(**kw):
    """The TrainConfig the shared options describe: the data set's (or --protocol's) values, then
    every option given (None: not given; 'none': unset)."""
    from dataclasses import fields

    from .protocols import protocol_values
    from .train import TrainConfig, implied_train_split

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in kw.items() if k in names and v is not None}
    given["compile"] = kw["compile_"]
    given["train_split"] = kw.get("train_split") or implied_train_split(kw["eval_split"])
    values = protocol_values(kw["protocol"], kw["dataset"]) if kw.get("protocol") else {}
    values.update({k: None if v == "none" else v for k, v in given.items()})
    return TrainConfig(**values)


#: TrainConfig fields a flag sets, where they are not the flag's own name.
_FLAG_FIELDS = {"eval_split": ("eval_split", "train_split"), "compile_": ("compile",), "loss": ("loss", "loss_kwargs")}
#: Keys a configuration file cannot give `bench` and `sweep`: they have their own options for them.
_NOT_SHARED = {"loss": "--losses / --loss", "loss_kwargs": "--losses / --loss", "seed": "--seeds",
               "tuned_from": "bench --config tuned", "tuned_runs": "bench --config tuned"}


def _given_fields(ctx: click.Context) -> set[str]:
    """TrainConfig fields set by flags the user gave (on the command line or through the environment)."""
    from click.core import ParameterSource

    given = set()
    for param in ctx.params:
        if ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given.update(_FLAG_FIELDS.get(param, (param,)))
    return given


def _with_file(ctx: click.Context, flags, values: dict | None):
    """The configuration of `values` (a file's or a record's), with every flag the user gave on top."""
    from dataclasses import asdict

    from .train import TrainConfig

    if values is None:
        return flags
    from .protocols import protocol_values

    given = _given_fields(ctx) & set(asdict(flags))
    if "protocol" in given and flags.protocol:  # --protocol on the command line brings its values over the file's
        given |= set(protocol_values(flags.protocol, flags.dataset))
    elif values.get("protocol"):  # a file naming a preset: its values, then the file's own
        values = {**protocol_values(values["protocol"], values.get("dataset", flags.dataset)), **values}
    return TrainConfig(**{**values, **{f: getattr(flags, f) for f in given}})


def _shared_file(path: str | None, command: str) -> dict | None:
    """A configuration file's values for `bench`/`sweep`: the options every run of theirs shares."""
    from .config_file import read_config_file

    if path is None:
        return None
    values = read_config_file(path)
    for key in values:
        if key in _NOT_SHARED:
            raise ValueError(f"{path}: {key} is not a shared option of `pmlbal {command}` (use {_NOT_SHARED[key]})")
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pmlbal")
def main() -> None:
    """pmlbal: balanced, fast, tuned contrastive losses for pytorch-metric-learning."""


@main.command()
@_train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True,
              help="pmlbal or PML loss class name, optionally with arguments: 'Name(key=value, ...)'.")
@click.option("--loss-arg", multiple=True, metavar="KEY=VALUE", help="Extra loss argument (repeatable).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--save-model", is_flag=True, help="Also save the trained model to RESULTS_DIR/models/ (for `pmlbal eval`).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file with the keys of a record's `config`; flags given override it.")
@click.option("--from-record", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Re-run the configuration of this run record (RESULTS_DIR/runs/*.json); flags given override it.")
@click.option("--resume", is_flag=True,
              help="Continue this configuration's interrupted run after its last finished epoch, if it has one.")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None,
              help="Also log losses, loss terms, metrics and the configuration to TensorBoard under DIR "
                   "(pip install 'pmlbal[tensorboard]').")
@click.pass_context
def train(ctx, loss, loss_arg, seed, save_model, config_file, from_record, resume, tensorboard, **kw):
    """Train one model, evaluate it and write its run record.

    Several processes: `torchrun --nproc_per_node N -m pmlbal.cli train ...` (BATCH_SIZE is global).
    """
    from .bench import parse_loss_spec, parse_value
    from .config_file import config_from_record, read_config_file
    from .train import train as run_train

    if config_file and from_record:
        raise click.UsageError("give --config or --from-record, not both")
    try:
        name, kwargs = parse_loss_spec(loss)
        extra = {}
        for item in loss_arg:
            if "=" not in item:
                raise ValueError(f"--loss-arg expects KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            extra[key.strip()] = parse_value(value.strip())
        cfg = replace(_base_config(**kw), loss=name, loss_kwargs={**kwargs, **extra}, seed=seed, save_model=save_model)
        values = read_config_file(config_file) if config_file else config_from_record(from_record) if from_record else None
        cfg = _with_file(ctx, cfg, values)
        if values is not None and extra and "loss" not in _given_fields(ctx):  # --loss-arg adds to the file's arguments
            cfg = replace(cfg, loss_kwargs={**cfg.loss_kwargs, **extra})
        if resume and int(os.environ.get("WORLD_SIZE", "1")) == 1:  # torchrun: train says why it cannot resume
            from .resume import checkpoint_path

            if not checkpoint_path(cfg.resolved()).exists():  # e.g. a flag differs from the interrupted run's
                click.echo(f"nothing to resume ({checkpoint_path(cfg.resolved())} does not exist): "
                           f"starting from epoch 1")
        # One line per epoch on stdout comes from train itself (pmlbal.train.epoch_line).
        record = run_train(cfg, resume=resume, tensorboard=tensorboard, log=click.echo)
    except (*_errors(), ImportError) as err:
        _fail(err)
    if record is None:  # a non-zero torchrun rank: rank 0 reports
        return
    f = record["final"]
    click.echo(" ".join(f"{k}={v:.4f}" for k, v in f.items() if isinstance(v, float)))
    click.echo(f"record: {record['path']}")
    for old in record.get("replaced", []):
        click.echo(f"replaced the earlier record of this configuration and seed: {old}")
    if record.get("model_path"):
        click.echo(f"model: {record['model_path']}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Split of the checkpoint's data set to evaluate on.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data set folder (default: the one the model was trained with).")
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Decoded-image cache.")
def eval_(checkpoint, split, root, device, cache_dir):
    """Evaluate a model saved by `pmlbal train --save-model`: Recall@K, MAP@R, R-precision, geometry."""
    from .train import evaluate_checkpoint

    try:
        metrics = evaluate_checkpoint(checkpoint, split, root, device, cache_dir,
                                      warn=lambda m: click.echo(f"Warning: {m}", err=True))
    except _errors() as err:
        _fail(err)
    click.echo(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


@main.command()
@_train_options
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
    from .bench import DEFAULT_LOSSES, run_bench, split_specs
    from .leaderboard import write_leaderboards
    from .registry import list_losses

    words = [c for c in config_ if c in ("default", "tuned")]
    files = [c for c in config_ if c not in ("default", "tuned")]
    if len(set(words)) > 1 or len(files) > 1:
        raise click.BadParameter(f"at most one of default/tuned and one FILE, got {', '.join(config_)}",
                                 param_hint="--config")
    for f in files:
        if not Path(f).is_file():
            raise click.BadParameter(f"neither default, tuned nor an existing file: {f!r}", param_hint="--config")
    tuned = "tuned" in words
    specs = list(DEFAULT_LOSSES) if losses == "default" else list_losses() if losses == "all" else split_specs(losses)
    try:
        base = _with_file(ctx, _base_config(**kw), _shared_file(files[0] if files else None, "bench"))
        storage = storage or _default_storage(base.results_dir)
        if study_name and not tuned:
            raise ValueError("--study is for --config tuned")
        records = run_bench(base, specs, seeds, log=click.echo, tuned_storage=storage if tuned else None,
                            tuned_study=study_name)
        boards = write_leaderboards(base.results_dir, base.dataset, expected_seeds=seeds, warn=click.echo)
    except _errors() as err:
        _fail(err)
    click.echo(Path(base.results_dir, f"{base.dataset}.md").read_text() if boards else "no records")
    if not records:  # every run diverged (or failed before): a script must not read this as success
        _fail(RuntimeError(f"no run succeeded: none of the {len(specs)} loss(es) x {seeds} seed(s) has a record; "
                           f"see {Path(base.results_dir) / 'failed'}"))


@main.command()
@_train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True, help="Loss class name (must take 'balance').")
@click.option("--balance", "balances", default="0.25,0.5,1,2,4", show_default=True, help="Comma list of balances.")
@click.option("--batch-sizes", default=None, help="Comma list of batch sizes (default: the data set's).")
@click.option("--seeds", type=POSITIVE_INT, default=1, show_default=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file of the options the runs share (flags given override it).")
@click.pass_context
def sweep(ctx, loss, balances, batch_sizes, seeds, config_file, **kw):
    """Recall@1 across balance x batch size: one run per cell, then the leaderboard and its plot."""
    from .bench import run_bench
    from .leaderboard import write_leaderboards

    try:
        bals = [float(b) for b in balances.split(",")]
        sizes = [int(b) for b in batch_sizes.split(",")] if batch_sizes else None
    except ValueError:
        _fail(ValueError(f"--balance and --batch-sizes take comma lists of numbers, got {balances!r} / {batch_sizes!r}"))
    try:
        shared = _with_file(ctx, _base_config(**kw), _shared_file(config_file, "sweep"))
        for size in sizes or [shared.batch_size]:
            base = replace(shared, batch_size=size)
            run_bench(base, [f"{loss}(balance={b})" for b in bals], seeds, log=click.echo)
        write_leaderboards(shared.results_dir, shared.dataset, expected_seeds=seeds, warn=click.echo)
    except _errors() as err:
        _fail(err)
    click.echo(f"plot: {Path(shared.results_dir, shared.dataset + '_balance.png')}")


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


@main.command()
@_without("eval_split")  # tuning always scores on the class-disjoint validation split
@_train_options
@click.option("--loss", default="BalancedNTXentLoss", show_default=True, help="Loss to tune (see pmlbal.tune.search_space).")
@click.option("--budget", type=POSITIVE_INT, default=30, show_default=True, help="Training runs at most.")
@click.option("--search", type=click.Choice(["cd", "tpe", "random", "grid"]), default="cd", show_default=True,
              help="Coordinate descent, or Optuna's TPE / random / grid for comparison.")
@click.option("--storage", default=None,
              help="Optuna storage: sqlite:///PATH, journal:PATH (several processes) or postgresql://... (several "
                   "machines); default sqlite:///RESULTS_DIR/tuning.db.")
@click.option("--study", "study_name", default=None, help="Study name (default: DATASET-LOSS-SEARCH); resumed if it exists.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--space", multiple=True, metavar="NAME=LOW:HIGH", help="Override a coordinate's range (repeatable).")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Trials run at once: 1 = in this process; N > 1 = N local worker processes (one per GPU when "
                   "there are several); 0 = none here, `pmlbal tune-worker` processes elsewhere do the work.")
@click.option("--final/--no-final", default=True, show_default=True,
              help="Retrain the best configuration on train and evaluate it once on test (recorded).")
@click.option("--show", is_flag=True, help="Print the study's trajectory and write its plot; runs nothing.")
@click.option("--grace", type=POSITIVE_FLOAT, default=120.0, show_default=True,
              help="Seconds without a heartbeat before a running trial is declared lost and queued again.")
@click.option("--metric", type=click.Choice(["recall@1", "map_at_r", "r_precision", "precision_at_1"]),
              default="recall@1", show_default=True,
              help="Validation metric to maximise (map_at_r where Recall@1 saturates, as on digits).")
@click.option("--confirm", is_flag=True,
              help="tpe/random: spend the last budget/4 trials re-running the top 3 points with new seeds, as cd does.")
def tune(loss, budget, search, storage, study_name, seed, space, workers, final, show, grace, metric, confirm, **kw):
    """Tune LOSS on the class-disjoint validation split; each trial is one recorded training run."""
    storage = storage or _default_storage(kw["results_dir"])
    from .tune import make_spec, open_storage, run_search, search_space, training_objective
    from .tune.progress import progress_bar, update_bar
    from .tune.run import retrain_best
    from .tune.workers import start_workers, stop_workers

    name = study_name or f"{kw['dataset']}-{loss}-{search}"
    try:
        if show:
            from .tune.run import storage_exists

            if not storage_exists(storage):  # looking must not create a database
                raise ValueError(f"no study {name!r}: {storage} does not exist")
            return _show_study(open_storage(storage, read_only=True), name, kw["results_dir"])
        from .records import check_writable

        check_writable(Path(kw["results_dir"]) / "runs")  # before the first trial, not after it
        store = open_storage(storage)
        dims = search_space(loss, kw["dataset"], _parse_space(space))
        base = _base_config(**{**kw, "eval_split": "val"})
        if confirm and search not in ("tpe", "random"):
            raise ValueError(f"--confirm is for --search tpe or random (cd always confirms), not {search}")
        spec = make_spec(base, loss, dims, search, budget, seed, metric, confirm)
        if workers > 1 and not _is_shared(storage):
            raise ValueError("--workers > 1 needs a storage other processes can open (sqlite:///, journal: or a server)")
        bar, log = progress_bar(name, budget)
        procs = start_workers(storage, name, workers, kw["device"], kw["results_dir"], kw["cache_dir"]) \
            if workers > 1 else []
        try:
            study = run_search(training_objective(base, loss, dims, metric) if workers == 1 else None, dims, search, budget,
                               store, name, seed, spec=spec, local=workers == 1, grace=grace, confirm=confirm,
                               progress=lambda st: update_bar(bar, st), log=log)
        finally:
            bar.close()
            stop_workers(procs)
    except _errors() as err:
        _fail(err)
    from .tune import pick
    from .tune.progress import format_params, runs_text

    best = pick(study)
    if best is None:
        raise click.ClickException(f"study {name!r}: no trial finished")
    click.echo(f"study {name}: {len(study.trials)} trials; pick: val {metric} {best.value:.4f} "
               f"(mean of {runs_text(best.runs)}) at {format_params(best.params)}")
    if final:
        try:
            record = retrain_best(study, storage, results_dir=kw["results_dir"], cache_dir=kw["cache_dir"],
                                  device=kw["device"], progress=True)
        except _errors() as err:
            _fail(err)
        f = record["final"]
        click.echo(f"best configuration on test: recall@1 {f['recall@1']:.4f} map@r {f['map_at_r']:.4f} "
                   f"(record {record['path']})")


def _default_storage(results_dir: str) -> str:
    """The tuning studies live with the run records they produced."""
    return f"sqlite:///{Path(results_dir, 'tuning.db')}"


def _is_shared(storage: str) -> bool:
    return storage.startswith("journal:") or ("://" in storage and not storage.startswith("sqlite:///:memory:"))


def _show_study(storage, name: str, results_dir: str) -> None:
    import optuna

    from .tune.report import format_trajectory, plot_trajectory

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise click.ClickException(f"no study {name!r} in this storage; pass --study (see `optuna studies --storage URL`)")
    click.echo(format_trajectory(study))
    if any(t.value is not None for t in study.trials):
        click.echo(f"plot: {plot_trajectory(study, Path(results_dir, f'tuning-{name}.png'))}")


@main.command("tune-worker")
@click.option("--storage", required=True, help="The study's storage URL (as given to `pmlbal tune`).")
@click.option("--study", "study_name", required=True, help="The study to work for.")
@click.option("--device", default=None, callback=_device, help="Override the study's device (e.g. cuda:1).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--heartbeat", type=POSITIVE_FLOAT, default=30.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--idle-timeout", type=POSITIVE_FLOAT, default=None,
              help="Leave after this many seconds with nothing queued (default: wait for the search to end).")
def tune_worker(storage, study_name, device, results_dir, cache_dir, heartbeat, idle_timeout):
    """Claim a study's queued trials, train each and report, until the search is done."""
    import os

    import optuna

    from .tune import open_storage
    from .tune.run import dims_of, load_spec, make_sampler, objective_from_spec
    from .tune.workers import work

    try:
        store = open_storage(storage)
        try:
            study = optuna.load_study(study_name=study_name, storage=store)
        except KeyError:
            raise ValueError(f"no study {study_name!r} in {storage}; start it with `pmlbal tune --workers 0`")
        spec = load_spec(study)
        if spec["search"] != "cd":  # workers sample new trials themselves; distinct seeds, distinct samples
            study.sampler = make_sampler(spec["search"], dims_of(spec), spec["seed"] + os.getpid())
        overrides = {"results_dir": results_dir, "cache_dir": cache_dir, "progress": False}
        if device:
            overrides["device"] = device
        objective = objective_from_spec(spec, **overrides)
    except _errors() as err:
        _fail(err)
    from .tune.budget import sampling_budget

    n = work(study, objective, heartbeat=heartbeat, sample_new=spec["search"] != "cd",
             budget=sampling_budget(spec["budget"], spec.get("confirm", False), spec["search"]),
             total=spec["budget"], idle_timeout=idle_timeout, log=click.echo)
    click.echo(f"worker done: {n} trials run")


@main.command()
@click.option("--dataset", type=DATASET, default=None, help="Only this data set (default: every one with records).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--seeds", type=POSITIVE_INT, default=None, help="Seeds a complete row should have (rows with fewer are marked).")
@click.option("--no-plots", is_flag=True, help="Tables only.")
def leaderboard(dataset, results_dir, seeds, no_plots):
    """Rebuild DIR/<dataset>.md/.csv, plots and DIR/README.md from DIR/runs/*.json."""
    from .leaderboard import write_leaderboards

    from .records import check_writable

    try:
        check_writable(results_dir, create=False)  # before reading hundreds of records
        boards = write_leaderboards(results_dir, dataset, expected_seeds=seeds, plots=not no_plots,
                                    warn=lambda m: click.echo(m, err=True))
    except OSError as err:
        _fail(err)
    if not boards:
        from .records import iter_records

        held = sorted({r["config"]["dataset"] for r in iter_records(results_dir, on_error=lambda msg: None)})
        what = f"{dataset} test-split records" if dataset else "usable run records"
        raise click.ClickException(f"no {what} under {Path(results_dir) / 'runs'}"
                                   + (f"; it holds records of: {', '.join(held)}" if held else ""))
    for ds in boards:
        click.echo(Path(results_dir, f"{ds}.md").read_text())


@main.group()
def datasets():
    """Data set utilities."""


@datasets.command("check")
@click.argument("name", type=DATASET)
@click.argument("root", type=click.Path(file_okay=False), required=False)
@click.option("--decode", is_flag=True, help="Also open every image (slow), reporting unreadable files by path.")
def datasets_check(name, root, decode):
    """Verify NAME's layout under ROOT: image and class counts per split; exit 1 naming what is wrong."""
    from .data import CorruptImageError, DatasetLayoutError, create
    from .train import check_retrievable

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
        _fail(err)


@main.group()
def records():
    """Run record utilities."""


@records.command("migrate")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
def records_migrate(results_dir):
    """Rename DIR/runs/ and DIR/failed/ records written before records were named by their key
    (<dataset>-<loss>-<config_key>-s<seed>-<id>.json), so that look-ups find them; run once."""
    from .records import migrate

    try:
        moved = migrate(results_dir)
    except OSError as err:
        _fail(err)
    for old, new in moved:
        click.echo(f"{old} -> {new.name}")
    click.echo(f"{len(moved)} record(s) renamed")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
