"""`tune_study`: a tuning study as `pmlbal tune` runs it, callable from Python.

It settles everything a study needs before its first run: the search space, the validation folds, the
validation runs' length, the defaults (`x0`, the first point and the pick's reference), the noise
floor and the acceptance threshold of the data set, the warnings a user should read (a short
validation horizon while batch size is searched; too few validation classes), and the worker
processes; then it spends the budget (`run.run_search`), or runs its trials on Ray (`ray_engine`), with a
progress bar.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna

from ..config import TrainConfig
from ..records import check_writable
from ..registry import dataset_spec
from .budget import spec_trials
from .model import StudySpec
from .run import SAMPLED, run_search, training_objective
from .spaces import default_point, search_space
from .spec import make_spec
from .storage import open_storage
from .workers import start_workers, stop_workers

#: Validation classes below which a pick may not carry over to unseen classes (docs/tuner.md, "Small data").
FEW_VAL_CLASSES = 20
#: The descent's acceptance threshold, in units of the data set's paired run-to-run noise (docs/tuner.md,
#: "Acceptance"): a move needs a probe better than the current point by more than TOL_IN_NOISE x noise.
TOL_IN_NOISE = 0.5


def tune_study(base: TrainConfig, loss: str, budget: int, *, search: str = "cd", storage: str | None = None,
               study_name: str | None = None, seed: int = 0, space: Mapping[str, tuple[float, float]] | None = None,
               x0: Mapping[str, Any] | None = None, val_folds: int | None = None, workers: int = 1,
               grace: float = 120.0, metric: str | None = None, confirm: bool = False,
               tune_epochs: int | None = None, progress: bool = True, engine: str = "optuna",
               cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, address: str | None = None,
               log: Callable[[str], None] = print) -> optuna.Study:
    """Create or resume a study tuning `loss` on `base`'s data set with a budget of `budget` training
    runs, and spend it; returns the study (`pmlbal.tune.pick` reads its pick).

    `base`: the run a user would train without tuning (its loss arguments, batch size and lr are the
    defaults unless `x0` names them); `storage`: an Optuna storage URL (default sqlite:///RESULTS/tuning.db);
    `space`: NAME -> (low, high) range overrides; `val_folds`: class-disjoint validation folds a trial
    trains (default: the data set's); `workers`: 1 runs trials here, N > 1 starts N `pmlbal tune-worker`
    processes, 0 leaves them to workers started elsewhere; `metric`: the validation metric maximised
    (default: the data set's lead metric); `confirm`: TPE or random search end with the confirm phase;
    `tune_epochs`: validation runs shorter than the final run (default: as long). `engine`: "optuna" (the
    coordinator and workers above) or "ray": the trials run as a Ray Tune experiment (`ray_engine.run_ray_search`)
    with `cpus_per_trial` and `gpus_per_trial` each, on the Ray cluster at `address` (default: a local one
    started here), and are recorded in the same study. One-line warnings go to `log`.
    """
    if base.task != "metric":
        raise ValueError("tune --task ssl is not built yet (its objective, kNN top-1 on a validation split of the "
                         "training images, is issue 48's); tune trains metric-learning runs")
    ds = dataset_spec(base.dataset)
    storage = storage or f"sqlite:///{Path(base.results_dir) / 'tuning.db'}"
    name = study_name or f"{base.dataset}-{loss}-{search}"
    metric = metric or ds.lead_metric
    check_writable(Path(base.results_dir) / "runs")  # before the first trial, not after it
    dims = search_space(loss, base.dataset, dict(space or {}))
    folds = val_folds or ds.val_folds
    val = replace(base, loss=loss, eval_split="val", train_split="train-sub", val_folds=folds, val_fold=0)
    if confirm and search not in SAMPLED:
        raise ValueError(f"--confirm is for --search {', '.join(SAMPLED)} (cd always confirms), not {search}")
    _check_engine(engine, search, workers, address)
    if workers > 1 and not shared_storage(storage):
        raise ValueError("--workers > 1 needs a storage other processes can open (sqlite:///, journal: or a server)")
    resolved = val.resolved()
    val, final_epochs = _validation_length(val, resolved.epochs, tune_epochs, dims, log)
    start = default_point(loss, dims, base.loss_kwargs, resolved.batch_size, resolved.lr, x0)
    noise = float(ds.val_noise.get(metric, 0.0))
    spec = make_spec(val, loss, dims, search, budget, seed, metric, confirm, final_epochs, x0=start,
                     tol=TOL_IN_NOISE * noise, noise=noise)
    _warn_few_classes(val, folds, log)
    store = open_storage(storage)  # a bad storage is the first error a user should read
    trials = spec_trials(spec)  # what the budget in runs buys on its folds, as the workers count it
    bar, update, say = _progress(name, trials, progress, log)
    try:
        if engine == "ray":
            from .ray_engine import run_ray_search  # Ray is imported there, on first use

            return run_ray_search(val, spec, store, name, trials, cpus_per_trial=cpus_per_trial,
                                  gpus_per_trial=gpus_per_trial, address=address, progress=update, log=say)
        return _optuna_engine(base, val, spec, dims, storage, store, name, trials, workers=workers, grace=grace,
                              confirm=confirm, progress=update, log=say)
    finally:
        if bar is not None:
            bar.close()


def _optuna_engine(base: TrainConfig, val: TrainConfig, spec: StudySpec, dims, storage: str, store, name: str, trials: int,
                   *, workers: int, grace: float, confirm: bool, progress, log: Callable[[str], None]) -> optuna.Study:
    """The trials in this process (`workers` 1) or in N `pmlbal tune-worker` processes started here (N > 1;
    0: workers started elsewhere), on Optuna storage (`run.run_search`)."""
    procs = start_workers(storage, name, workers, base.device, base.results_dir, base.cache_dir, grace) \
        if workers > 1 else []
    try:
        objective = training_objective(val, spec.loss, dims, spec.metric) if workers == 1 else None
        study = run_search(objective, dims, spec.search, trials, store, name, spec.seed, spec=spec,
                           local=workers == 1, grace=grace, confirm=confirm, progress=progress, log=log)
    except BaseException:  # Ctrl-C or an error: the workers stop now, not after their trials
        stop_workers(procs, interrupt=True, log=log)
        raise
    stop_workers(procs)
    return study


def _validation_length(val: TrainConfig, epochs: int, tune_epochs: int | None, dims, log: Callable[[str], None]):
    """(the validation runs' configuration, the final run's epochs where they are shorter, else None)."""
    if tune_epochs is None or tune_epochs == epochs:  # equal: the study an unflagged run makes
        return val, None
    if tune_epochs > epochs:
        raise ValueError(f"--tune-epochs {tune_epochs} is more than the final run's {epochs} epochs")
    if "batch_size" in {d.name for d in dims}:
        log(f"warning: batch size is searched on {tune_epochs}-epoch validation runs for a {epochs}-epoch "
            f"final run; a short horizon ranks batch sizes differently (docs/tuner.md, 'Horizon')")
    return replace(val, epochs=tune_epochs), epochs


ENGINES = ("optuna", "ray")


def _check_engine(engine: str, search: str, workers: int, address: str | None) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray" and search not in ("cd", *SAMPLED):
        raise ValueError(f"--engine ray runs --search cd, {', '.join(SAMPLED)}, not {search}")
    if engine == "ray" and workers != 1:
        raise ValueError("--workers is for --engine optuna: Ray places the trials itself (--cpus-per-trial, "
                         "--gpus-per-trial)")
    if engine == "ray":  # without the extra, or with an address where nothing answers: one line, before any work
        from .ray_engine import check_address, import_ray

        import_ray()
        check_address(address)


def shared_storage(storage: str) -> bool:
    """Whether other processes can open `storage` (a file or a server, not in-memory SQLite)."""
    return storage.startswith("journal:") or ("://" in storage and not storage.startswith("sqlite:///:memory:"))


def _progress(name: str, trials: int, show: bool, log: Callable[[str], None]):
    if not show:
        return None, None, log
    from .progress import progress_bar, update_bar

    bar, say = progress_bar(name, trials)
    return bar, (lambda study: update_bar(bar, study)), say


def _warn_few_classes(val: TrainConfig, folds: int, log: Callable[[str], None]) -> None:
    """One line when a validation fold holds fewer than FEW_VAL_CLASSES classes."""
    from ..config import data_splits

    cfg = val.resolved()
    n = dataset_spec(cfg.dataset).load(cfg.root, data_splits(cfg)[1]).num_classes
    if n < FEW_VAL_CLASSES:
        log(f"warning: each validation fold holds {n} classes (of {folds} fold{'s' if folds != 1 else ''}); a pick "
            f"made on so few may not carry over to unseen classes (docs/tuner.md, 'Small data sets')")

