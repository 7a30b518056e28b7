"""Searches over training runs on Optuna storage: cd, tpe, gp, random or grid; final retrain; lookup.

A study made by `pmlbal tune` carries its own description (the "spec", `spec.py`) in its user
attributes, so a `pmlbal tune-worker` on another machine needs only the storage URL (`storage.py`)
and the study name to rebuild the objective.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..records import RunLockedError
from ..train import train

from ..config import TrainConfig

from ..evaluation import MetricsError

from ..loop import DivergedError
from .dims import Dim
from .folds import FoldScore, train_trial
from .optuna import SPEC, CoordinateDescentSampler, Pick, pick
from .plan import SEARCH_VERSION
from .policy import Step, next_step
from .powers import PowersOfTwo
from .spaces import final_samples_per_class, grid_values, suggest
# The study's spec and storage live in spec.py and storage.py; the CLI, bench and tests import them from here.
from .model import StudySpec
from .spec import config_for, load_spec, make_spec, open_study
from .storage import open_storage, storage_exists
from .trials import FAILED_FOR_GOOD, RUN
from .workers import GRACE, STATE, Heartbeat, StaleMonitor, coordinate, heartbeat_for

__all__ = ["FINAL", "SEARCHES", "SEARCH_VERSION", "SPEC", "config_for",
           "final_config", "find_tuned", "load_spec", "make_sampler", "make_spec", "objective_from_spec",
           "open_storage", "open_study", "retrain_best", "retry_failed_once", "run_search", "storage_exists",
           "supervise", "train_point", "training_objective"]

SEARCHES = ("cd", "tpe", "gp", "random", "grid")
#: The searches whose trials an Optuna sampler proposes and that may end with the confirm phase.
SAMPLED = ("tpe", "gp", "random")
FINAL = "pmlbal:final_run_id"


# -- objectives -------------------------------------------------------------------------------
def training_objective(base: TrainConfig, loss: str, dims: Sequence[Dim], metric: str = "recall@1") -> Callable:
    """Each trial: one recorded training run on train-sub per validation fold (`base.val_folds`, K),
    each scored by `metric` on its class-disjoint val classes; the trial's value is the folds' mean
    (`pmlbal.tune.folds`), their values, spread and gain over the untrained network are its user
    attributes. Run k of a point (``trial.user_attrs["run"]``) trains fold i with seed
    ``base.seed + k * K + i``; a run already recorded under the results folder is read back."""

    def objective(trial: optuna.Trial) -> float:
        values = {d.name: suggest(trial, d) for d in dims}
        run = int(trial.user_attrs.get(RUN, 0))  # a re-run of a point trains with the next seed
        try:
            score = train_point(base, loss, dims, values, run, metric)
        except (DivergedError, MetricsError) as err:
            # Failed for good: the same seed fails again, so the search never retries it.
            trial.set_user_attr(FAILED_FOR_GOOD, str(err))
            raise
        for key, value in score.attrs().items():
            trial.set_user_attr(key, value)
        return score.value

    return objective


def train_point(base: TrainConfig, loss: str, dims: Sequence[Dim], params: Mapping[str, Any], run: int,
                metric: str = "recall@1") -> FoldScore:
    """Run `run` of the point `params`: its recorded training run on train-sub per validation fold, scored by
    `metric` on the fold's val classes (`folds.train_trial`); what every engine's trial trains. Runs already
    recorded under the results folder are read back (a trial retried after its process died, a resumed study)."""
    cfg = replace(config_for(base, loss, params, dims), train_split="train-sub", eval_split="val", progress=False)
    return train_trial(cfg, run, metric, train)


def objective_from_spec(spec: StudySpec, **overrides: Any) -> Callable:
    """Rebuild a study's training objective (for a worker); `overrides` e.g. device, results_dir."""
    return training_objective(spec.base_config(**overrides), spec.loss, spec.dims, spec.metric)


# -- searches -------------------------------------------------------------------------------------
def make_sampler(search: str, dims: Sequence[Dim], seed: int = 0, budget: int | None = None,
                 spec: StudySpec | None = None) -> optuna.samplers.BaseSampler:
    """The search's sampler (cd with the settings of a study's `spec`: x0, tol, noise, coupled); Optuna's
    TPE, Gaussian-process (`GPSampler`, its observation noise fitted: runs are noisy) and random search
    draw batch sizes as powers of two, as cd and grid do. GP's quasi-random start-up trials are a third
    of `budget`, at most Optuna's 10, so that a small budget still leaves most trials to the model."""
    powers = [d.name for d in dims if d.scale == "log2-int"]
    if search == "cd":
        return CoordinateDescentSampler(budget, seed, order=[d.name for d in dims], search_space=dims,
                                        **_settings(spec))
    if search == "tpe":
        return PowersOfTwo(optuna.samplers.TPESampler(seed=seed), powers)
    if search == "gp":
        startup = 10 if budget is None else min(10, max(2, budget // 3))
        return PowersOfTwo(optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                                     deterministic_objective=False), powers)
    if search == "random":
        return PowersOfTwo(optuna.samplers.RandomSampler(seed=seed), powers)
    if search == "grid":
        return optuna.samplers.GridSampler({d.name: grid_values(d) for d in dims}, seed=seed)
    raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")


def retry_failed_once(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: queue a trial that raised once more, with the same parameters (not one
    whose training diverged: that would only diverge again)."""
    if trial.state == TrialState.FAIL and FAILED_FOR_GOOD not in trial.user_attrs:
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def run_search(objective: Callable | None, dims: Sequence[Dim], search: str, budget: int, storage: Any,
               study_name: str, seed: int = 0, direction: str = "maximize", *, spec: StudySpec | None = None,
               local: bool = True, heartbeat: float | None = None, grace: float = 120.0, poll: float = 1.0,
               confirm: bool = False, progress: Callable[[optuna.Study], None] | None = None,
               log: Callable[[str], None] = lambda s: None) -> optuna.Study:
    """Create or resume `study_name` and spend `budget` trials on it.

    cd (docs/tuner.md) runs through the coordinator (`pmlbal.tune.workers.coordinate`): it enqueues
    probes and re-runs, re-queues trials of lost workers and, with `local`, runs the queued trials in
    this process. With `local=False` the trials are left to `pmlbal tune-worker` processes. tpe,
    random and grid run Optuna's own loop here (`local`), or supervise the workers (not `local`); their
    first trial is the defaults (the spec's `x0`), and with `confirm` (tpe, gp, random) their last
    budget // 4 trials re-run their 3 best points and the defaults, as cd's confirm phase does. A
    trial that raises is recorded as failed with its error and tried once more. `pick(study)` then
    gives the pick.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if confirm and search == "grid":
        raise ValueError("--confirm is for tpe, gp and random (cd always confirms; a grid runs every point once)")
    study = open_study(storage, study_name, spec, direction, make_sampler(search, dims, seed, budget, spec))
    study.set_user_attr("search", search)
    study.set_user_attr(GRACE, grace)  # workers started by hand beat to it (`heartbeat_for`)
    heartbeat = heartbeat_for(grace) if heartbeat is None else heartbeat
    settings = _settings(spec)
    x0, noise = settings["x0"], settings["noise"]
    if search == "cd":
        coordinate(study, dims, budget=budget, order=[d.name for d in dims], seed=seed, **settings,
                   poll=poll, grace=grace, heartbeat=heartbeat, objective=objective if local else None,
                   on_decision=(lambda d: progress(study)) if progress else None, log=log)
        return study
    if local:
        for lost in StaleMonitor(grace).sweep(study, log, orphans=True):  # left running by a killed run of this search
            RetryHeartbeatStaleTrialCallback(max_retry=1)(study, lost)
        callbacks = [retry_failed_once] + ([lambda s, t: progress(s)] if progress else [])

        def beating(trial: optuna.Trial) -> float:
            with Heartbeat(study, trial, heartbeat):
                return objective(trial)

        monitor = StaleMonitor(grace)
        while (step := _step(study, dims, budget, search, confirm, x0, noise)).action != "done":
            _enqueue(study, step.probes)
            queued = sum(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
            if step.action == "wait" and not queued:  # a trial another process runs: its end, or its heartbeat's
                for lost in monitor.sweep(study, log):
                    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, lost)
                time.sleep(poll)
                continue
            # A wait with a queued retry of a failed trial runs the retry.
            study.optimize(beating, n_trials=step.trials if step.action != "wait" else queued, catch=(Exception,),
                           callbacks=callbacks)
        return study
    supervise(study, budget, grace=grace, poll=poll, progress=progress, log=log, search=search, dims=dims,
              confirm=confirm, x0=x0, noise=noise)
    return study


def _settings(spec: StudySpec | None) -> dict[str, Any]:
    """cd's settings from a study's description; a study without one (a test, a notebook): none."""
    return spec.cd_settings() if spec is not None else {"x0": None, "tol": 0.0, "noise": 0.0, "coupled": {}}


def _step(study: optuna.Study, dims: Sequence[Dim], budget: int, search: str, confirm: bool,
          x0: Mapping[str, Any] | None, noise: float) -> Step:
    return next_step(study.get_trials(deepcopy=False), dims, budget=budget, search=search, confirm=confirm, x0=x0,
                     noise=noise, maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def _enqueue(study: optuna.Study, probes) -> None:
    for point, run in probes:
        study.enqueue_trial(dict(point), user_attrs={RUN: run}, skip_if_exists=False)


def supervise(study: optuna.Study, budget: int, grace: float = 120.0, poll: float = 1.0,
              progress: Callable[[optuna.Study], None] | None = None, log: Callable[[str], None] = print, *,
              search: str = "tpe", dims: Sequence[Dim] = (), confirm: bool = False,
              x0: Mapping[str, Any] | None = None, noise: float = 0.0) -> None:
    """For tpe, gp, random and grid with workers: the policy's steps (`policy.next_step`) while the
    workers sample, re-queueing lost trials once; the confirm rounds are queued here for them."""
    monitor = StaleMonitor(grace)
    study.set_user_attr(STATE, "running")
    while True:
        for lost in monitor.sweep(study, log):
            RetryHeartbeatStaleTrialCallback(max_retry=1)(study, lost)
        if progress:
            progress(study)
        step = _step(study, dims, budget, search, confirm, x0, noise)
        if step.action == "done":
            study.set_user_attr(STATE, "done")
            return
        _enqueue(study, step.probes)  # the defaults before the workers' first sample; a confirm round
        if not step.probes:
            time.sleep(poll)


# -- after the search ----------------------------------------------------------------------------
def final_config(study: optuna.Study, storage_url: str, **overrides: Any) -> TrainConfig:
    """The picked configuration, trained on the full train split and evaluated on test, for the
    spec's `final_epochs` where its validation runs were shorter (`pmlbal tune --tune-epochs`)."""
    spec = load_spec(study)
    best = pick(study)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no finished trial")
    if spec.final_epochs is not None:
        overrides = {"epochs": spec.final_epochs, **overrides}
    return picked_config(spec.base_config(**overrides), study, best, storage_url)


def picked_config(base: TrainConfig, study: optuna.Study, best: Pick, storage_url: str) -> TrainConfig:
    """`base` with the pick `best` of `study`, as its final run trains it: on the full train split,
    evaluated on test, with the train split's batch composition (samples per class from the data
    set's rule for train, `final_samples_per_class`, not the tuning split's), and its provenance."""
    spec = load_spec(study)
    cfg = config_for(base, spec.loss, best.params, spec.dims)
    if "batch_size" in best.params:
        cfg = replace(cfg, samples_per_class=final_samples_per_class(base.dataset, best.params["batch_size"]))
    folds = spec.folds
    search = spec.search + ("+confirm" if spec.confirm and spec.search != "cd" else "")
    by = f"{search} on {folds} fold{'s' if folds != 1 else ''}" + ("; the defaults: nothing beat them" if best.is_default
                                                                  else "")
    return replace(cfg, train_split="train", eval_split="test", val_folds=1, val_fold=0,
                   tuned_from=f"{storage_url}#{study.study_name}", tuned_runs=best.runs, tuned_by=by)


def retrain_best(study: optuna.Study, storage_url: str, *, log: Callable[[str], None] = print, poll: float = 5.0,
                 **overrides: Any) -> dict[str, Any]:
    """Train the best configuration once on train and evaluate on test; its run record. When another
    process trains that very run (a second `pmlbal tune` of the same study), wait for its record rather
    than fail: the lock says whether its holder lives, and a dead holder's lock is taken over."""
    cfg = final_config(study, storage_url, **overrides).resolved()
    said = False
    while True:
        try:
            record = train(cfg, reuse=True)
            break
        except RunLockedError as err:
            if not said:
                log(f"{err}: waiting for its record (the same final run)")
                said = True
            time.sleep(poll)
    study.set_user_attr(FINAL, record["run_id"])
    return record


def find_tuned(storage_url: str, dataset: str, loss: str, study_name: str | None = None) -> tuple[optuna.Study, Pick] | None:
    """The tuning study for `dataset` and `loss` and its pick: `study_name` if given, else the study
    whose last trial finished most recently (picks of different studies are not comparable: other
    metrics, spaces or search versions). None if there is none or it has no complete trial."""
    storage = open_storage(storage_url)
    found, latest = None, None
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if study_name is not None and summary.study_name != study_name:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        attrs = study.user_attrs.get(SPEC)
        spec = StudySpec.from_attrs(attrs, f"study {summary.study_name!r}") if attrs else None
        if spec is None or spec.dataset != dataset or spec.loss != loss:
            if study_name is not None:
                raise ValueError(f"study {study_name!r} in {storage_url} does not tune {loss} on {dataset}")
            continue
        best = pick(study)
        ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
        if best is None or not ends:
            continue
        if latest is None or max(ends) > latest:
            found, latest = (study, best), max(ends)
    if study_name is not None and found is None:
        raise ValueError(f"no study {study_name!r} with a complete trial in {storage_url}")
    return found
