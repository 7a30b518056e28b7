"""`pmlbal tune --engine ray`: a study's trials run as a Ray Tune experiment (docs/tuning.md, "Ray Tune engine").

Ray places the trials on the CPUs and GPUs of a local Ray or a cluster; everything else stays the Optuna
engine's. The study, its spec and its budget are the ones `tune_study` builds for either engine; a trial
trains its fold runs as the Optuna objective does (`run.train_point`), writing ordinary records under the
results folder and reading back those already there; cd runs `ray.CoordinateDescentSearcher` with the
spec's plan, tpe, gp and random Ray's `OptunaSearch` with pmlbal's samplers (`run.make_sampler`), and
``--confirm`` the same re-runs (`policy.next_step`). Each trial is added to the study's Optuna storage in
the driver as it ends, with its run index and fold attributes, so `pick`, ``--show``, ``--final`` and
``bench --config tuned`` read a Ray study as any other, and a rerun resumes from the study's trials.

Ray is imported on first use: pmlbal works without the extra (``pip install 'pmlbal[ray]'``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig

from ..evaluation import MetricsError

from ..loop import DivergedError
from .dims import Dim, distribution_of
from .policy import next_step
from .run import make_sampler, train_point
from .model import StudySpec
from .spec import open_study
from .trials import FAILED_FOR_GOOD, RUN, trials_as_results

RAY_EXTRA = "pip install 'pmlbal[ray]'"
ENGINE = "pmlbal:engine"  # study user attribute: the engine that ran its trials
RAY_TRIAL = "pmlbal:ray_trial"  # trial system attribute: the Ray Tune trial it was
ATTRS = "pmlbal:attrs"  # result key: the trial's user attributes (`folds.FoldScore.attrs`), as JSON
#: Seconds to wait for a cluster's address to accept a connection (Ray itself retries for minutes).
CONNECT_TIMEOUT = 5.0
#: Set while Tune runs: its new output engine prints the experiment's folder (a temporary one here) and a
#: TensorBoard hint whatever the verbosity; the older one is silent at verbose=0.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0"}


def import_ray():
    """`ray` and `ray.tune`, or a ValueError naming the extra to install."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ValueError(f"--engine ray needs Ray Tune: {RAY_EXTRA}") from None
    return ray, tune


def run_ray_search(val: TrainConfig, spec: StudySpec, storage: Any,
                   name: str, trials: int, *, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                   address: str | None = None, progress: Callable[[optuna.Study], None] | None = None,
                   log: Callable[[str], None] = print) -> optuna.Study:
    """Create or resume study `name` on `storage` (`spec`: `spec.make_spec`, whose loss, search space and
    metric the trials train and score) and spend its `trials` trials
    (on `val.val_folds` folds each) as Ray Tune trials of `cpus_per_trial` CPUs and `gpus_per_trial` GPUs;
    returns the study. `address`: a running cluster ("auto", "HOST:PORT", "ray://HOST:PORT"); default: the
    Ray this process already initialised, else a local one started here and shut down at the end. An
    interrupted run (Ctrl-C) raises KeyboardInterrupt once Ray has stopped; what ended is in the study."""
    if not cpus_per_trial > 0 or not gpus_per_trial >= 0:
        raise ValueError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {cpus_per_trial} and "
                         f"{gpus_per_trial}")
    shipped = _shipped(val, gpus_per_trial)
    ray, tune = import_ray()
    started = connect(ray, address)  # before the study is made: a Ray that cannot start leaves nothing behind
    folder = tempfile.mkdtemp(prefix="pmlbal-ray-")  # Ray's own experiment files: the study is the record
    try:
        _check_resources(ray, cpus_per_trial, gpus_per_trial)
        study = open_study(storage, name, spec, "maximize")
        study.set_user_attr("search", spec.search)
        study.set_user_attr(ENGINE, "ray")
        dims, metric = spec.dims, spec.metric
        fit = _fitter(tune, tune.with_resources(_trainable(shipped, spec.loss, dims, metric),
                                                {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
                      _recorder(study, dims, metric, progress, log), folder, name)
        if spec.search == "cd":
            _descend(study, dims, spec, trials, fit)
        else:
            _sample(study, dims, spec, trials, fit)
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return study


def _shipped(val: TrainConfig, gpus_per_trial: float) -> TrainConfig:
    """The base configuration as Ray's workers get it (bookkeeping only: no run's key changes). They run
    in folders of their own, so the folders are made absolute and a relative data root is refused; a
    trial that asked Ray for no GPU trains on the CPU (Ray leaves the GPUs visible to it, unplaced)."""
    if val.root is not None and not Path(val.root).is_absolute():
        raise ValueError(f"--engine ray needs an absolute --root (Ray trials run in folders of their own), "
                         f"not {val.root!r}")
    if str(val.device).startswith("cuda") and not gpus_per_trial > 0:
        raise ValueError(f"--device {val.device} needs --gpus-per-trial > 0 with --engine ray (a trial trains on "
                         f"the GPUs Ray gives it)")
    cache = str(Path(val.cache_dir).resolve()) if val.cache_dir is not None else None
    device = "cpu" if val.device == "auto" and not gpus_per_trial > 0 else val.device
    return replace(val, results_dir=str(Path(val.results_dir).resolve()), cache_dir=cache, device=device)


def connect(ray, address: str | None) -> bool:
    """Use the Ray this process already initialised (a Python caller's own), else join the cluster at
    `address`, else start a local one; whether this call started it (and so shuts it down). Any failure
    is a one-line ValueError."""
    check_address(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or "local", ignore_reinit_error=True)
    except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError... with long texts
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise ValueError(f"cannot {where}: {text}") from None
    return address is None


def _check_resources(ray, cpus: float, gpus: float) -> None:
    """A trial the cluster can never place would wait forever: say so instead."""
    have = ray.cluster_resources()
    for kind, want, flag in (("CPU", cpus, "--cpus-per-trial"), ("GPU", gpus, "--gpus-per-trial")):
        if want > have.get(kind, 0.0):
            raise ValueError(f"{flag} {want:g}: the Ray cluster has {have.get(kind, 0.0):g} {kind}s in all")


def check_address(address: str | None) -> None:
    """Fail fast when nothing answers at a HOST:PORT `address` (ray.init would retry for minutes)."""
    import socket

    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except ValueError:
        raise ValueError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT") from None
    except OSError as err:
        raise ValueError(f"cannot join the Ray cluster at {address}: nothing answers there "
                         f"({err.strerror or err})") from None


# -- the trial and its record -------------------------------------------------------------------------
def _trainable(base: TrainConfig, loss: str, dims: Sequence[Dim], metric: str) -> Callable[[dict], dict]:
    """One trial on a Ray worker: `run.train_point` of the config's point and run index. A run that failed
    for good (diverged, NaN metrics: the same seed would again) is reported, not raised, so neither Ray nor
    the search tries it again."""

    def trial(config: dict) -> dict:
        params = {d.name: config[d.name] for d in dims}
        try:
            score = train_point(base, loss, dims, params, int(config.get(RUN, 0)), metric)
        except (DivergedError, MetricsError) as err:
            return {metric: math.nan, FAILED_FOR_GOOD: str(err), "error": f"{type(err).__name__}: {err}"}
        # JSON, not lists: Tune's TensorBoard logger would warn about every list it cannot plot.
        return {metric: score.value, ATTRS: json.dumps(score.attrs())}

    return trial


def record_trial(study: optuna.Study, dims: Sequence[Dim], metric: str, config: Mapping[str, Any],
                 result: Mapping[str, Any] | None, error: str | None,
                 ray_trial: str | None = None) -> optuna.trial.FrozenTrial:
    """Add an ended Ray trial to `study` as the Optuna engine would have stored it: its point as params,
    its run index (``user_attrs["run"]``), and its value and fold attributes, or FAIL with its error
    (and ``FAILED_FOR_GOOD`` for a run that failed for good)."""
    result = dict(result or {})
    attrs: dict[str, Any] = {RUN: int(config.get(RUN, 0))}
    value = result.get(metric)
    if error is None and result.get(FAILED_FOR_GOOD):
        attrs[FAILED_FOR_GOOD] = str(result[FAILED_FOR_GOOD])
        error = str(result.get("error") or result[FAILED_FOR_GOOD])
    elif error is None and (value is None or math.isnan(float(value))):
        error = f"the trial reported no {metric}"
    if error is not None:
        attrs["error"] = error
    else:
        attrs.update(json.loads(result.get(ATTRS) or "{}"))
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE if error is None else TrialState.FAIL,
        value=float(value) if error is None else None, params={d.name: config[d.name] for d in dims},
        distributions={d.name: distribution_of(d) for d in dims}, user_attrs=attrs,
        system_attrs={RAY_TRIAL: ray_trial} if ray_trial else None)
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]


def _recorder(study: optuna.Study, dims: Sequence[Dim], metric: str,
              progress: Callable[[optuna.Study], None] | None, log: Callable[[str], None]) -> Callable:
    def record(ray_trial: str, config: dict, result: dict | None, error: str | None) -> None:
        trial = record_trial(study, dims, metric, config, result, error, ray_trial)
        if trial.state == TrialState.FAIL:
            log(f"trial {trial.number} failed: {trial.user_attrs['error']}")
        if progress:
            progress(study)

    return record


# -- the searches -----------------------------------------------------------------------------------------
def _fitter(tune, trainable, record: Callable, folder: str, name: str) -> Callable:
    """``fit(search_alg, num_samples, max_failures)``: one Ray Tune run of `trainable`, each ended trial
    recorded; the number of trials it recorded."""
    from .ray import TrialEnds

    def fit(search_alg, num_samples: int, max_failures: int, param_space: dict | None = None) -> int:
        ended = 0

        def on_end(*args) -> None:
            nonlocal ended
            record(*args)
            ended += 1

        callback = TrialEnds(on_end)
        config = tune.TuneConfig(search_alg=search_alg, num_samples=num_samples, reuse_actors=True)
        run = tune.RunConfig(name=name, storage_path=folder, verbose=0, callbacks=[callback],
                             failure_config=tune.FailureConfig(max_failures=max_failures))
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=config, run_config=run)
        try:
            with _environment(QUIET_TUNE):
                tuner.fit()
        except tune.TuneError as err:  # the driver's own failure (a trial's error is recorded instead)
            raise ValueError(f"Ray Tune stopped: {str(err).strip().splitlines()[0]}") from None
        return ended

    return fit


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ended(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def _descend(study: optuna.Study, dims: Sequence[Dim], spec: StudySpec, trials: int, fit: Callable) -> None:
    """cd: the searcher, with the spec's plan, told the study's ended trials first (a resumed study)."""
    from .ray import CoordinateDescentSearcher

    searcher = CoordinateDescentSearcher(dims, spec.metric, "max", budget=trials, order=[d.name for d in dims],
                                         seed=spec.seed, **spec.cd_settings())
    results, _ = trials_as_results(_ended(study), dims)
    for r in results:
        searcher.add_evaluated_point({**r.point, RUN: r.run}, r.value, error=r.value is None and not r.final,
                                     pruned=r.final)
    if searcher.decide().action != "done":
        # Each run is tried at most retries + 1 = 2 times: the searcher ends the run before this bound.
        fit(searcher, 2 * trials, 0)
        if searcher.decide().action != "done":
            raise KeyboardInterrupt  # Ray stopped on Ctrl-C (it returns instead of raising)


def _sample(study: optuna.Study, dims: Sequence[Dim], spec: StudySpec, trials: int, fit: Callable) -> None:
    """tpe, gp, random: the policy's steps (`policy.next_step`). A sample step is Ray's OptunaSearch with
    pmlbal's sampler, the defaults first, told the study's ended trials (a resumed study), a trial that
    raises tried once more by Ray; a confirm step runs its re-runs as presets."""
    from ray.tune.search.optuna import OptunaSearch

    search, x0 = spec.search, spec.x0
    while True:
        ended = _ended(study)  # Ray adds a trial to the study when it ends: there are no others
        step = next_step(ended, dims, budget=trials, search=search, confirm=spec.confirm, x0=x0, noise=spec.noise)
        if step.action == "done":
            return
        if step.action == "sample":
            # A resumed study's sampler takes another seed: the first one's draws are in the study already.
            alg = OptunaSearch({d.name: distribution_of(d) for d in dims}, spec.metric, "max",
                               points_to_evaluate=[dict(p) for p, _ in step.probes] or None,
                               sampler=make_sampler(search, dims, spec.seed + len(ended), trials))
            for t in ended:
                alg.add_evaluated_point(t.params, t.value, error=t.state == TrialState.FAIL,
                                        pruned=t.state == TrialState.PRUNED)
            if fit(alg, step.trials, 1) < step.trials:
                raise KeyboardInterrupt
        elif step.action == "confirm":
            _confirm(step.probes, fit)
        else:
            raise RuntimeError(f"a Ray study has only ended trials; the policy asked to {step.action}")


def _confirm(probes, fit: Callable) -> None:
    """A confirm round (tpe, gp, random with ``--confirm``): its (point, run) re-runs as Ray presets."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    configs = [{**point, RUN: run} for point, run in probes]
    # Ray runs presets over a space that names their keys, and warns of a preset outside it.
    space = {k: tune.choice(list(dict.fromkeys(c[k] for c in configs))) for k in configs[0]}
    if fit(BasicVariantGenerator(points_to_evaluate=configs), len(configs), 1, space) < len(configs):
        raise KeyboardInterrupt
