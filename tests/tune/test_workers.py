"""Several worker processes on one study: journal file and PostgreSQL, no duplicate probe, lost workers."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from pmlbal.tune import Dim, point_key, store
from pmlbal.tune.optuna import trial_point
from pmlbal.tune.workers import HEARTBEAT, OWNER, StaleMonitor, claim_queued, coordinate, run_trial, work
from tests.helpers import serial_search
from tests.tune.storages import postgres_url_or_skip

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0), Dim("batch_size", "log2-int", 8, 64)]


def value(p) -> float:
    return (-(math.log2(p["balance"]) - 1.3) ** 2 - 2 * (math.log2(p["temperature"]) + 3.4) ** 2
            - 0.5 * (math.log2(p["batch_size"]) - 4) ** 2)


def objective(trial) -> float:
    p = {"balance": trial.suggest_float("balance", 1 / 16, 16, log=True),
         "temperature": trial.suggest_float("temperature", 1 / 64, 1.0, log=True),
         "batch_size": trial.suggest_int("batch_size", 8, 64, log=True)}
    time.sleep(0.02)  # long enough that workers overlap
    return value(p)


def serial_points(budget=None):
    return serial_search(DIMS, value, budget)


def runs_of(trials, states=(TrialState.COMPLETE,)):
    """(point, run index) of each trial in `states`."""
    return [(point_key(trial_point(t), DIMS), t.user_attrs.get("run", 0)) for t in trials if t.state in states]


def storage_for(kind, tmp_path, name):
    if kind == "journal":
        path = str(tmp_path / f"{name}.log")
        return lambda: optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/{name}.db"
        return lambda: url
    url = postgres_url_or_skip()
    return lambda: url


def _worker(make_storage, name, die_on=None, marker=None):
    study = optuna.load_study(study_name=name, storage=make_storage())

    def obj(trial):
        if die_on is not None and trial.number == die_on:
            try:  # only the first worker to take it dies
                open(marker, "x").close()
            except FileExistsError:
                return objective(trial)
            os.kill(os.getpid(), signal.SIGKILL)  # killed mid-trial, like kill -9
        return objective(trial)

    work(study, obj, poll=0.02, heartbeat=0.2, log=lambda s: None)


def start_workers(n, make_storage, name, **kw):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(make_storage, name), kwargs=kw) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgres"])
@pytest.mark.parametrize("n_workers", [2, 4])
def test_workers_spend_the_budget_without_a_duplicate_probe(tmp_path, kind, n_workers):
    """Version 2 over several processes: the budget is spent, no phase-1/2 point and no (point, run)
    runs twice, and the trials are the very ones a single process runs."""
    make_storage = storage_for(kind, tmp_path, "s")
    name = f"cd-{n_workers}-{os.getpid()}-{time.time_ns()}"
    study = optuna.create_study(study_name=name, storage=make_storage(), direction="maximize")
    procs = start_workers(n_workers, make_storage, name)
    try:
        final = coordinate(study, DIMS, budget=24, poll=0.02, grace=30.0, log=lambda s: None)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)  # each saw "done" and left
    trials = study.get_trials()
    assert len(trials) == 24 and all(t.state == TrialState.COMPLETE for t in trials)
    done = runs_of(trials)
    assert len(set(done)) == len(done)  # no (point, run) twice
    first = [k for k, run in done if run == 0]
    assert len(first) == 18 and len(set(first)) == 18  # phases 1-2: 24 - 24 // 4 distinct points
    expected, serial = serial_points(budget=24)
    assert set(done) == expected  # the very search a single process makes
    assert final.best == serial.best and final.best_value == pytest.approx(serial.best_value)
    assert len({t.system_attrs[OWNER] for t in trials}) >= 2  # the work was shared


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_version_one_with_workers_converges_like_one_process(tmp_path, kind):
    make_storage = storage_for(kind, tmp_path, "v1")
    name = f"v1-{os.getpid()}-{time.time_ns()}"
    study = optuna.create_study(study_name=name, storage=make_storage(), direction="maximize")
    procs = start_workers(2, make_storage, name)
    try:
        final = coordinate(study, DIMS, poll=0.02, grace=30.0, log=lambda s: None)
    finally:
        for p in procs:
            p.join(timeout=30)
    done = runs_of(study.get_trials())
    assert len(set(done)) == len(done) and set(done) == serial_points()[0]
    assert final.best_value == pytest.approx(serial_points()[1].best_value)


def test_budget_with_four_workers(tmp_path):
    make_storage = storage_for("journal", tmp_path, "b")
    study = optuna.create_study(study_name="b", storage=make_storage(), direction="maximize")
    procs = start_workers(4, make_storage, "b")
    try:
        coordinate(study, DIMS, budget=11, poll=0.02, log=lambda s: None)
    finally:
        for p in procs:
            p.join(timeout=30)
    done = runs_of(study.get_trials())
    assert len(done) == 11 and len(set(done)) == 11


def test_a_worker_killed_mid_trial_is_detected_and_its_probe_rerun(tmp_path):
    make_storage = storage_for("journal", tmp_path, "k")
    study = optuna.create_study(study_name="k", storage=make_storage(), direction="maximize")
    procs = start_workers(2, make_storage, "k", die_on=3, marker=str(tmp_path / "died"))
    try:
        final = coordinate(study, DIMS, poll=0.02, grace=30.0, log=lambda s: None)
    finally:
        for p in procs:
            p.join(timeout=30)
    assert sorted(p.exitcode for p in procs) == [-signal.SIGKILL, 0]
    trials = study.get_trials()
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert len(lost) == 1 and lost[0].number == 3 and "lost" in lost[0].user_attrs["error"]
    done = runs_of(trials)
    assert (point_key(trial_point(lost[0]), DIMS), 0) in done  # re-queued and run by the survivor
    assert len(set(done)) == len(done) and set(done) == serial_points()[0]
    assert final.best_value == pytest.approx(serial_points()[1].best_value)


def test_silent_worker_on_another_machine_times_out():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"balance": 1.0})
    trial = claim_queued(study)
    store.set_trial_system_attr(study, trial, OWNER, "another-host:1")
    store.set_trial_system_attr(study, trial, HEARTBEAT, 1.0)
    monitor = StaleMonitor(grace=0.2)
    assert monitor.sweep(study, log=lambda s: None) == []  # first sight starts its clock
    time.sleep(0.3)
    lost = monitor.sweep(study, log=lambda s: None)
    assert [t.number for t in lost] == [trial.number] and study.trials[0].state == TrialState.FAIL


def test_live_heartbeat_is_not_lost():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"balance": 1.0})
    trial = claim_queued(study)
    monitor = StaleMonitor(grace=0.3)

    def slow(t):
        for _ in range(8):
            assert monitor.sweep(study, log=lambda s: None) == []
            time.sleep(0.1)
        return 1.0

    assert run_trial(study, trial, slow, heartbeat=0.05, log=lambda s: None).state == TrialState.COMPLETE


def test_a_raising_trial_is_recorded_with_its_error_and_retried_once(tmp_path):
    calls = []

    def flaky(trial):
        x = trial.suggest_float("x", 1 / 64, 64, log=True)
        calls.append(x)
        if x > 6:
            raise RuntimeError("diverged")
        return -(math.log2(x) - 2) ** 2

    study = optuna.create_study(direction="maximize")
    final = coordinate(study, [Dim("x", "log", 1 / 64, 64)], poll=0.0, objective=flaky, log=lambda s: None)  # version 1
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["error"] == "RuntimeError: diverged" for t in failed)
    for t in failed:  # each failing point ran exactly twice: the trial and its one retry
        assert calls.count(t.params["x"]) == 2
    assert final.vs_default.pairs == 1 and final.is_default  # version 1 confirms nothing: the defaults stay
    best_run = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert best_run.params == {"x": 4.0}


def test_coordinator_resumes_a_killed_search(tmp_path):
    """A version-2 search interrupted part-way (Ctrl-C in trial 9) and restarted runs the same
    (point, run) pairs as one uninterrupted run; the interrupted run is retried, not lost."""
    make_storage = storage_for("journal", tmp_path, "r")
    study = optuna.create_study(study_name="r", storage=make_storage(), direction="maximize")

    def interrupted(trial):
        if trial.number == 9:
            raise KeyboardInterrupt
        return objective(trial)

    with pytest.raises(KeyboardInterrupt):
        coordinate(study, DIMS, budget=20, seed=0, poll=0.0, objective=interrupted, log=lambda s: None)
    again = optuna.load_study(study_name="r", storage=make_storage())
    coordinate(again, DIMS, budget=20, seed=0, poll=0.0, objective=objective, log=lambda s: None)
    trials = again.get_trials()
    done = runs_of(trials)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [9]
    assert len(done) == 20 and set(done) == serial_points(budget=20)[0]


def _sampling_worker(make_storage, name, budget):
    study = optuna.load_study(study_name=name, storage=make_storage(), sampler=optuna.samplers.RandomSampler(os.getpid()))
    work(study, objective, poll=0.02, heartbeat=0.2, sample_new=True, budget=budget, log=lambda s: None)


def test_random_search_spread_over_workers_stops_at_the_budget(tmp_path):
    from pmlbal.tune.run import supervise

    make_storage = storage_for("sqlite", tmp_path, "rnd")
    study = optuna.create_study(study_name="rnd", storage=make_storage(), direction="maximize")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_sampling_worker, args=(make_storage, "rnd", 12)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        supervise(study, 12, poll=0.05, log=lambda s: None)
    finally:
        for p in procs:
            p.join(timeout=30)
    trials = study.get_trials()
    assert all(p.exitcode == 0 for p in procs)
    assert 12 <= len(trials) <= 14 and all(t.state == TrialState.COMPLETE for t in trials)  # a race may add one per extra worker
    assert len({t.system_attrs[OWNER] for t in trials}) >= 2


def test_the_heartbeat_follows_the_grace_so_a_live_worker_is_never_declared_lost():
    from pmlbal.tune.workers import heartbeat_for

    assert heartbeat_for(120.0) == 30.0 and heartbeat_for(20.0) == 5.0  # the --grace 20 of the fault trial
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"balance": 1.0})
    trial = claim_queued(study)
    grace = 0.4
    monitor = StaleMonitor(grace=grace)

    def slow(t):  # a trial several grace periods long, swept as a coordinator does
        for _ in range(12):
            assert monitor.sweep(study, log=lambda s: None) == []
            time.sleep(grace / 4)
        return 1.0

    assert run_trial(study, trial, slow, heartbeat=heartbeat_for(grace), log=lambda s: None).state == TrialState.COMPLETE


def test_a_retry_whose_run_another_live_worker_trains_waits_for_its_record():
    from pmlbal.records import RunLockedError

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"balance": 1.0})
    trial, calls, said = claim_queued(study), [], []

    def locked_twice(t):
        calls.append(1)
        if len(calls) < 3:
            raise RunLockedError("another process (host:1) is training this run")
        return 0.5  # the other worker's record, read back

    frozen = run_trial(study, trial, locked_twice, heartbeat=1.0, log=said.append, poll=0.01)
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.5 and len(calls) == 3
    assert len(said) == 1 and "waiting for that run's record" in said[0]


def _orphan_worker(url, name, coordinator, started):
    # A forked child inherits the test process's SIGINT handler (Ray's, once a Ray test ran); the worker
    # process `pmlbal tune` starts has Python's, which turns SIGINT into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    study = optuna.load_study(study_name=name, storage=url)

    def long_trial(trial):
        open(started, "x").close()
        time.sleep(60)  # far longer than the test waits
        return 1.0

    work(study, long_trial, poll=0.02, heartbeat=0.1, coordinator=coordinator, log=lambda s: None)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "in-a-trial"])
def test_a_worker_whose_coordinator_dies_leaves_within_its_heartbeat(tmp_path, busy):
    url = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="o", storage=url, direction="maximize")
    ctx = mp.get_context("fork")
    coordinator = ctx.Process(target=time.sleep, args=(60,))
    coordinator.start()
    started = tmp_path / "started"
    if busy:
        study.enqueue_trial({"balance": 1.0})
    owner = f"{__import__('socket').gethostname()}:{coordinator.pid}"
    worker = ctx.Process(target=_orphan_worker, args=(url, "o", owner, str(started)))
    worker.start()
    try:
        if busy:
            deadline = time.monotonic() + 30
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert started.exists()
        time.sleep(0.3)
        assert worker.is_alive()  # the coordinator lives: the worker waits (or trains)
        coordinator.kill()
        coordinator.join()
        worker.join(timeout=60)  # a heartbeat (0.1 s) and one storage write; generous for a loaded machine
        assert worker.exitcode == 0
    finally:
        for p in (worker, coordinator):
            if p.is_alive():
                p.kill()
    if busy:  # the trial it held is failed, so a later run of the search retries it
        assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["error"] == "interrupted"


def test_an_interrupted_coordinator_stops_its_workers_at_once_not_after_their_trials():
    """Fault trial, second round (issue 46, case 20): SIGINT to the coordinator alone left two minutes of
    silence while it waited for each worker's trial to end."""
    import subprocess
    import sys
    import time

    from pmlbal.tune.workers import stop_workers

    worker = subprocess.Popen([sys.executable, "-c", "import time\nprint('up', flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE)
    assert worker.stdout.readline().strip() == b"up"  # past its start-up, as a worker in a trial
    said, start = [], time.monotonic()
    stop_workers([worker], interrupt=True, log=said.append)
    assert worker.returncode is not None and time.monotonic() - start < 20
    assert said and "stopping 1 tune-worker process" in said[0]
