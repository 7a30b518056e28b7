"""Several workers on one study: a coordinator enqueues probes, workers claim and run them.

The coordinator replays coordinate descent on the study's trials (complete, failed, running and
queued), enqueues the probes not yet queued (``study.enqueue_trial``), waits at the coordinate
barrier and marks the study done at the end. Workers, on any machine that reaches the storage,
claim a queued trial with the storage's compare-and-set (WAITING -> RUNNING, as Optuna's own
``ask`` does), so no probe is taken twice, run it and report it.

Liveness: a worker writes a heartbeat into its running trial's system attributes. Optuna's
own heartbeat exists only for RDB storages; this one works on journal files too, and staleness
is judged by the coordinator's clock (a heartbeat that has not changed for `grace` seconds),
so clocks of different machines need not agree. A stale trial is marked failed; the search then
asks for its point again (one retry), exactly as for a trial that raised. The heartbeat interval
follows from the grace (`heartbeat_for`: four beats a grace period), so the two cannot disagree, and
a retry whose run another live worker is still training waits for that run's record.

Workers that a coordinator started watch it (`--coordinator HOST:PID`): when it is gone (killed), they
stop within a heartbeat, failing the trial they hold so a later run of the search retries it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Mapping, Sequence

import filelock
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..procs import owner_alive, owner_id
from ..records import RunLockedError
from . import store
from .coordinate_descent import CoordinateDescent
from .dims import Dim, point_key
from .optuna import decide_from_trials
from .trials import LOST, ORPHAN, RUN, Decision, trial_point, trial_run

HEARTBEAT = "pmlbal:heartbeat"
OWNER = "pmlbal:worker"
STATE = "pmlbal:state"  # study user attribute: "running" or "done"
GRACE = "pmlbal:grace"  # study user attribute: the coordinator's grace, from which workers' heartbeat follows

#: The longest heartbeat interval, in seconds, and beats per grace period.
MAX_HEARTBEAT, BEATS_PER_GRACE = 30.0, 4


def heartbeat_for(grace: float) -> float:
    """The heartbeat interval under a coordinator that declares a trial lost after `grace` seconds
    without one: BEATS_PER_GRACE beats a grace period, at most MAX_HEARTBEAT seconds apart."""
    return min(MAX_HEARTBEAT, grace / BEATS_PER_GRACE)


def worker_name() -> str:
    """The owner of the trials this process runs ("host:pid", `pmlbal.procs.owner_id`)."""
    return owner_id()


class Heartbeat:
    """Context manager: writes a fresh value to the trial's heartbeat attribute every `interval` s."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial | FrozenTrial, interval: float,
                 watch: Callable[[], bool] | None = None) -> None:
        """`watch`: checked at every beat; when it turns False (the coordinator is gone) the main thread
        gets a KeyboardInterrupt and the beats stop."""
        self.study, self.trial, self.interval, self.watch = study, trial, interval, watch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        store.set_trial_system_attr(self.study, self.trial, HEARTBEAT, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.watch is not None and not self.watch():
                # A real SIGINT (not _thread.interrupt_main): it also cuts short a blocking call.
                os.kill(os.getpid(), signal.SIGINT)
                return
            try:
                self.beat()
            except Exception:  # a finished trial or a storage hiccup: the next beat retries
                pass

    def __enter__(self) -> "Heartbeat":
        store.set_trial_system_attr(self.study, self.trial, OWNER, worker_name())
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def claim_queued(study: optuna.Study) -> optuna.Trial | None:
    """Take one queued trial (WAITING -> RUNNING); None when the queue is empty."""
    with _sqlite_claim_lock(study):
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if store.compare_and_set_state(study, t, TrialState.RUNNING):
                return store.open_trial(study, t)
    return None


@contextlib.contextmanager
def _sqlite_claim_lock(study: optuna.Study) -> Iterator[None]:
    """SQLite ignores SELECT ... FOR UPDATE, so two processes can both see a trial WAITING and
    both take it. On one machine an exclusive file lock beside the database makes the claim
    atomic; PostgreSQL and journal files need none."""
    path = store.sqlite_file(study)
    if path is None:
        yield
        return
    with filelock.FileLock(path + ".claim-lock"):
        yield


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float],
              heartbeat: float = 30.0, log: Callable[[str], None] = print,
              watch: Callable[[], bool] | None = None, poll: float = 5.0) -> FrozenTrial:
    """Run a claimed trial under a heartbeat and report it; an exception fails it with its error.

    A run that another live process is training (`RunLockedError`: this trial is the retry of one
    declared lost whose worker still trains) is waited for, `poll` seconds at a time, and its record
    read back. Ctrl-C (or `watch` turning False) fails the trial (so it is retried) and is re-raised.
    """
    with Heartbeat(study, trial, heartbeat, watch):
        try:
            value = _wait_out_locks(objective, trial, poll, log)
        except KeyboardInterrupt:
            _tell_failed(study, trial, "interrupted")
            raise
        except Exception as err:
            log(f"trial {trial.number} failed: {type(err).__name__}: {err}")
            return _tell_failed(study, trial, f"{type(err).__name__}: {err}", traceback.format_exc())
    try:
        return study.tell(trial, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # The coordinator gave this trial up for lost (no heartbeat) and queued it again.
        log(f"trial {trial.number} finished after it was declared lost; its retry stands")
        return store.get_trial(study, trial)


def _wait_out_locks(objective: Callable[[optuna.Trial], float], trial: optuna.Trial, poll: float,
                    log: Callable[[str], None]) -> float:
    said = False
    while True:
        try:
            return objective(trial)
        except RunLockedError as err:
            if not said:
                log(f"trial {trial.number}: {err}; waiting for that run's record")
                said = True
            time.sleep(poll)


def _tell_failed(study, trial, error: str, tb: str | None = None) -> FrozenTrial:
    try:
        trial.set_user_attr("error", error)
        if tb:
            store.set_trial_system_attr(study, trial, "fail_reason", tb)
        return study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return store.get_trial(study, trial)


def study_state(study: optuna.Study) -> str:
    return study.user_attrs.get(STATE, "running")


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], *, poll: float = 1.0,
         heartbeat: float = 30.0, sample_new: bool = False, budget: int | None = None, total: int | None = None,
         max_trials: int | None = None, idle_timeout: float | None = None, coordinator: str | None = None,
         log: Callable[[str], None] = print) -> int:
    """Worker loop: claim queued trials and run them until the study is done; returns trials run.

    `sample_new`: when the queue is empty, ask the study's sampler for a new trial (TPE, random,
    grid) while fewer than `budget` trials exist; leave once `total` (default `budget`) trials exist
    and all are finished, or the supervisor says "done" (with `--confirm` it queues the re-runs
    between the two). `idle_timeout`: give up after that many seconds with nothing to run (None:
    wait for the coordinator's "done"). `coordinator`: the "host:pid" of the process that started this
    worker; once it is gone the worker leaves, within a poll when idle and within a heartbeat in a trial.
    """
    ran, idle_since = 0, time.monotonic()
    alive = None if coordinator is None else (lambda: owner_alive(coordinator))
    while max_trials is None or ran < max_trials:
        if alive is not None and not alive():
            log(f"the coordinator {coordinator} is gone; worker exits")
            break
        trial = claim_queued(study)
        if trial is None and sample_new and (budget is None or len(study.get_trials(deepcopy=False)) < budget):
            with _sqlite_claim_lock(study):  # ask() pops queued trials too
                trial = study.ask()
        if trial is None:
            end = total if total is not None else budget
            if study_state(study) == "done" or (sample_new and end is not None and _all_finished(study)
                                                and len(study.get_trials(deepcopy=False)) >= end):
                break
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                log(f"no queued trial for {idle_timeout:.0f}s; worker exits")
                break
            time.sleep(poll)
            continue
        try:
            frozen = run_trial(study, trial, objective, heartbeat, log, watch=alive)
        except KeyboardInterrupt:
            if alive is None or alive():
                raise
            log(f"the coordinator {coordinator} is gone; trial {trial.number} failed for a retry; worker exits")
            break
        log(f"trial {frozen.number} {frozen.state.name.lower()}: {frozen.params} -> {frozen.value}")
        ran += 1
        idle_since = time.monotonic()
    return ran


def _all_finished(study) -> bool:
    return all(t.state.is_finished() for t in study.get_trials(deepcopy=False))


class StaleMonitor:
    """Marks failed the running trials whose worker is gone: a dead process on this host, or a
    heartbeat unchanged for `grace` seconds of this process's clock."""

    def __init__(self, grace: float = 120.0) -> None:
        self.grace = grace
        self._seen: dict[int, tuple[Any, float]] = {}

    def sweep(self, study: optuna.Study, log: Callable[[str], None] = print, orphans: bool = False) -> list[FrozenTrial]:
        """Mark lost trials failed and return them. `orphans`: this is the first sweep of a search
        (re)started after its process died; what it finds was lost with that process, and is
        marked ORPHAN (run again whatever the count: the job was killed, not the configuration)."""
        now, lost = time.monotonic(), []
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            beat, owner = t.system_attrs.get(HEARTBEAT), t.system_attrs.get(OWNER)
            last, since = self._seen.get(t.number, (None, now))
            if beat != last:
                self._seen[t.number] = (beat, now)
                since = now
            reason = None
            if owner is not None and not owner_alive(owner):
                reason = f"worker {owner} is gone"
            elif now - since > self.grace:
                reason = f"no heartbeat for {now - since:.0f}s"
            if reason is None:
                continue
            try:
                if orphans:
                    store.set_trial_user_attr(study, t, ORPHAN, True)
                store.set_trial_user_attr(study, t, "error", f"{LOST}{reason}")
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished meanwhile
            if store.compare_and_set_state(study, t, TrialState.FAIL):
                lost.append(store.get_trial(study, t))
                log(f"trial {t.number} lost ({reason}); its point is queued again")
        alive = {t.number for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in alive}
        return lost


def coordinate(study: optuna.Study, dims: Sequence[Dim], *, x0: Mapping[str, Any] | None = None,
               tol: float = 0.0, budget: int | None = None, order: Sequence[str] | None = None,
               seed: int = 0, retries: int = 1, coupled: Mapping[str, tuple[str, float]] | None = None,
               noise: float = 0.0, poll: float = 1.0, grace: float = 120.0, heartbeat: float = 30.0,
               objective: Callable[[optuna.Trial], float] | None = None,
               on_decision: Callable[[Decision], None] | None = None,
               log: Callable[[str], None] = print) -> Decision:
    """Drive the search (docs/tuner.md) on `study` until it is done; returns the final decision.

    Each round: mark lost trials failed, replay the search on the study's trials, enqueue the
    probes not yet queued (a re-run carries its run index in ``user_attrs["run"]``), and (with
    `objective`) run one queued trial here, so one process can be coordinator and worker at once.
    Without `objective`, `pmlbal tune-worker` processes do the work. Resumable: everything is read
    back from the study.
    """
    cd = CoordinateDescent(dims, x0, tol, budget, order, seed, retries, coupled, noise)
    monitor = StaleMonitor(grace)
    study.set_user_attr(STATE, "running")
    first = True
    while True:
        monitor.sweep(study, log, orphans=first)
        first = False
        trials = study.get_trials(deepcopy=False)
        decision = decide_from_trials(cd, trials, study.direction)
        if on_decision is not None:
            on_decision(decision)
        if decision.action == "done":
            study.set_user_attr(STATE, "done")
            return decision
        if decision.action == "probe":
            queued = {(point_key(trial_point(t), cd.dims), trial_run(t)) for t in trials
                      if t.state in (TrialState.WAITING, TrialState.RUNNING) and set(cd.by_name) <= set(trial_point(t))}
            for p, run in zip(decision.probes, decision.runs):
                if (point_key(p, cd.dims), run) not in queued:
                    study.enqueue_trial(p, user_attrs={RUN: run}, skip_if_exists=False)
        trial = claim_queued(study) if objective is not None else None
        if trial is not None:
            frozen = run_trial(study, trial, objective, heartbeat, log)
            log(f"trial {frozen.number} {frozen.state.name.lower()}: {frozen.params} -> {frozen.value}")
        else:
            time.sleep(poll)


# -- worker processes ----------------------------------------------------------------------------
def start_workers(storage: str, name: str, n: int, device: str, results_dir: str,
                  cache_dir: str | None = None, grace: float = 120.0) -> list:
    """Start `n` `pmlbal tune-worker` processes for study `name`, one per GPU in turn when `device`
    is auto or cuda and there are several; each logs to RESULTS_DIR/logs/NAME-workerI.log, beats
    `heartbeat_for(grace)` and watches this process (it leaves when this one is killed)."""
    import subprocess
    import sys
    from pathlib import Path

    devices = [device] * n
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            devices = [f"cuda:{i % count}" for i in range(n)]
    log_dir = Path(results_dir, "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, dev in enumerate(devices):
        args = [sys.executable, "-m", "pmlbal.cli", "tune-worker", "--storage", storage, "--study", name,
                "--device", dev, "--results-dir", results_dir, "--heartbeat", str(heartbeat_for(grace)),
                "--coordinator", owner_id()]
        if cache_dir:
            args += ["--cache-dir", cache_dir]
        with open(log_dir / f"{name}-worker{i}.log", "ab") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: Sequence, interrupt: bool = False, log: Callable[[str], None] = print) -> None:
    """Wait for the workers to leave (the study is done); terminate one that does not within 60 s. With
    `interrupt` (the coordinator stops early: Ctrl-C, an error), first send each a SIGINT, as Ctrl-C in the
    terminal would: its trial is failed for a retry and it leaves within seconds, not after its trial."""
    import signal

    alive = [p for p in procs if p.poll() is None]
    if interrupt and alive:
        log(f"stopping {len(alive)} tune-worker process{'es' if len(alive) != 1 else ''} (their running trials "
            "are failed and run again on resume)")
        for p in alive:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=30 if interrupt else 60)
        except Exception:
            p.terminate()
