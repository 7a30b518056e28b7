"""Options and parameter types the commands share; `train_options` is every `TrainConfig` flag.

Only light modules are imported here (the registry, the data sets' names, the protocols' names):
`pmlbal --help` builds every option below and must not start the heavy libraries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from ..config import TASKS
from ..data.cache import CACHE_MODES
from ..data.views import RECIPES
from ..models import HEAD_INITS, POOLINGS
from ..protocols import list_protocols
from ..registry import list_batch_sources, list_datasets

DATASET = click.Choice(list_datasets())
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
LEAD_METRICS = ["recall@1", "map_at_r", "r_precision", "precision_at_1"]


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


def default_storage(results_dir: str) -> str:
    """The tuning studies live with the run records they produced."""
    return f"sqlite:///{Path(results_dir, 'tuning.db')}"


def expand_user(ctx, param, value):
    """Callback: `~` expanded in a folder option (a shell leaves `--opt=~/x` alone, and a literal ./~ follows)."""
    return os.path.expanduser(value) if isinstance(value, str) else value


def check_results_dir(ctx, param, value):
    """`--results-dir`'s callback: `~` expanded (a shell leaves `--results-dir=~/x` alone), and the default
    refused inside pmlbal's own checkout, whose results/ holds the committed boards and records: a run
    lands there only when asked for by name."""
    from click.core import ParameterSource

    value = os.path.expanduser(value)
    if ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT and is_checkout_results(value):
        raise click.UsageError(f"{Path(value).resolve()} is pmlbal's committed results folder (this is its checkout): "
                               "give --results-dir results to add this run to the committed boards, or another folder")
    return value


def is_checkout_results(path: str) -> bool:
    """Whether `path` is the results/ folder of a git checkout of pmlbal itself."""
    folder = Path(path).resolve()
    root = folder.parent
    return (folder.name == "results" and (folder / "runs").is_dir() and (root / ".git").exists()
            and (root / "pmlbal" / "__init__.py").is_file())


def check_device_option(ctx, param, value):
    """`--device`'s callback: click's usage error for a device pmlbal does not run on."""
    from ..devices import check_device

    try:
        return check_device(value) if value is not None else None
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _data_options() -> list:
    return [
        click.option("--dataset", type=DATASET, default="digits", show_default=True, help="Data set to train and evaluate on."),
        click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder holding the data set's official layout (not needed for digits)."),
        click.option("--protocol", type=click.Choice(list_protocols()), default=None,
                     help="A published recipe's values (docs/protocols.md); other flags override them."),
    ]


def _network_options() -> list:
    return [
        click.option("--backbone", default=None,
                     help="timm model name, optionally with a weights tag: resnet50.tv_in1k (default: per data set)."),
        click.option("--pretrained", default=None,
                     help="'timm', a local state-dict file, or 'none' (random init, the default)."),
        click.option("--embedding-dim", type=POSITIVE_INT, default=None, help="Embedding size."),
        click.option("--pooling", type=click.Choice(POOLINGS), default=None,
                     help="Backbone pooling; avg+max sums GAP and GMP (Proxy-Anchor) [avg]."),
        click.option("--head-init", type=click.Choice(HEAD_INITS), default=None, help="[default]"),
        click.option("--freeze-bn/--no-freeze-bn", default=None, help="Freeze BatchNorm statistics and affine parameters."),
        click.option("--freeze-bn-stats", is_flag=True,
                     help="BatchNorm in eval mode (statistics frozen), its affine parameters trained (PML's trainer "
                          "freeze_trunk_batchnorm); not with --freeze-bn/--no-freeze-bn."),
    ]


def _training_options() -> list:
    return [
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
        click.option("--sampler", type=click.Choice(list_batch_sources()), default=None,
                     help="Batches: random P classes x m (m-per-class, the default), spectral clusters of confusable "
                          "classes, the highest-loss of many random m-per-class batches (osgd), or random samples."),
        click.option("--resample-every", type=POSITIVE_INT, default=1, show_default=True,
                     help="With --sampler spectral or osgd: re-embed the training set and rebuild batches every N epochs."),
    ]


def _input_options() -> list:
    return [
        click.option("--cache-size", type=POSITIVE_INT, default=None, help="Cached image side in px (default: per data set)."),
        click.option("--input-size", type=POSITIVE_INT, default=None, help="Crop size fed to the model (default: per data set)."),
        click.option("--crop-scale", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Smallest area fraction of a training crop (default: per data set)."),
        click.option("--hflip/--no-hflip", default=None,
                     help="Random horizontal flips of training crops (default: per data set; glyphs: off)."),
        click.option("--cache-mode", type=click.Choice(CACHE_MODES), default=None,
                     help="Training views from a centre square, or the whole image with its aspect kept [square]."),
        click.option("--task", type=click.Choice(TASKS), default=None,
                     help="metric: class labels train the model; ssl: two augmented views of each image do, labels "
                          "only evaluate it (kNN and linear probe on cls-train/cls-test, every class in both) [metric]."),
        click.option("--views", type=click.Choice(RECIPES), default=None,
                     help="--task ssl: the two views' recipe (default: the data set's; glyphs: glyph)."),
    ]


def _evaluation_options() -> list:
    return [
        click.option("--eval-on", type=click.Choice(["head", "backbone"]), default=None,
                     help="Evaluate the head's embeddings or the pooled backbone output [head; --task ssl evaluates the backbone]."),
        click.option("--cv-folds", type=click.IntRange(min=0), default=None,
                     help="k >= 2: k models on class-disjoint folds of the train classes, embeddings concatenated [0]."),
        click.option("--lead-metric", type=click.Choice(LEAD_METRICS), default=None,
                     help="Metric that picks the best epoch with --eval-every [recall@1]."),
        click.option("--eval-split", type=click.Choice(["test", "val"]), default="test", show_default=True,
                     help="'val' (class-disjoint, carved from train classes) for tuning, 'test' to report."),
        click.option("--train-split", type=click.Choice(["train", "train-sub"]), default=None,
                     help="Training split [train; train-sub with --eval-split val]."),
        click.option("--val-folds", type=click.IntRange(min=1), default=None,
                     help="K class-disjoint validation folds of the train classes, for validation runs [1: the "
                          "fixed split; tune: the data set's default, a trial's value is the folds' mean]."),
        click.option("--val-fold", type=click.IntRange(min=0), default=None,
                     help="Which of the --val-folds folds this run validates on [0]."),
        click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Evaluate every N epochs as well as at the end (0: only at the end)."),
    ]


def _machine_options() -> list:
    return [
        click.option("--device", default="auto", show_default=True, callback=check_device_option,
                     help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
        click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
                     callback=check_results_dir,
                     help="Run records go to DIR/runs/ (in pmlbal's own checkout, give it: its results/ are the "
                          "committed boards)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, callback=expand_user,
                     help="Decoded-image cache (default ~/.cache/pmlbal or $PMLBAL_CACHE)."),
    ]


def train_options(f):
    """Every flag of a `TrainConfig` (`configs.base_config` turns them into one), in --help's order."""
    options = [*_data_options(), *_network_options(), *_training_options(), *_input_options(),
               *_evaluation_options(), *_machine_options()]
    for opt in reversed(options):
        f = opt(f)
    return f


def without(*names: str):
    """Drop options of a shared group that this command ignores, so its --help does not offer them."""
    def decorator(f):
        f.__click_params__ = [p for p in getattr(f, "__click_params__", []) if p.name not in names]
        return f

    return decorator


#: A study name is also a file name (its plot, its workers' logs): letters, digits and . _ + = - only.
STUDY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def check_study_name(ctx, param, value):
    """Click callback: refuse a study name that could leave --results-dir in a path (`../x`, `a/b`)."""
    if value is not None and (not STUDY_NAME_RE.fullmatch(value) or ".." in value):
        raise click.BadParameter(f"{value!r}: a study name is also a file name; use letters, digits and . _ + = - "
                                 "(no '/' or '..')")
    if value is not None and len(value) > MAX_STUDY_NAME:  # file names end at 255 bytes; its logs add a suffix
        raise click.BadParameter(f"a study name is also a file name: at most {MAX_STUDY_NAME} characters, got "
                                 f"{len(value)}")
    return value


#: Longest study name: its plot and worker logs (``tuning-NAME.png``, ``NAME-worker12.log``) stay under 255 bytes.
MAX_STUDY_NAME = 200
