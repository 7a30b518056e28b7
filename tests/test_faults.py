"""SIGKILL `bench` and `tune` at random points (issue 16): nothing finished is lost or duplicated,
and the resumed job ends exactly where an uninterrupted one does.

The jobs run in forked processes (no import cost per restart) that SIGKILL themselves at chosen
"events" (either side of a training step, of a record's atomic write and of telling a trial to
Optuna; taking a run's lock), numbered over the whole job and drawn at random from those of an
uninterrupted run; the parent restarts the job until it completes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
from dataclasses import replace

import optuna
import pytest
import torch

import pmlbal.records as records
import pmlbal.loop as loop
import pmlbal.train as train_mod
from pmlbal.bench import run_bench
from pmlbal.records import iter_records
from pmlbal.config import TrainConfig
from pmlbal.tune import Dim, pick, run_search, training_objective

pytestmark = pytest.mark.slow
KILLS = 5  # per job: 10 in all
LOSSES = ["KCLLoss", "ContrastiveLoss"]


def instrument(counter, kill_points: set[int]) -> None:
    """Count events in this (forked) process into the shared `counter` (cumulative over the job's
    processes); SIGKILL the process when the count reaches one of `kill_points`."""

    def event():
        with counter.get_lock():
            counter.value += 1
            now = counter.value
        if now in kill_points:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(f):
        def wrapped(*a, **k):
            event()
            out = f(*a, **k)
            event()
            return out
        return wrapped

    loop.train_step = wrap(loop.train_step)
    records.atomic_write_text = wrap(records.atomic_write_text)
    real_lock = records.run_lock

    def lock(*a, **k):
        event()
        return real_lock(*a, **k)

    train_mod.run_lock = lock
    optuna.study.Study.tell = wrap(optuna.study.Study.tell)


def run_forked(job, counter, kill_points=frozenset()) -> int:
    # One thread in the child: a forked copy of a process whose OpenMP pool has run hangs in its
    # first parallel region (GNU libgomp), as CI's runs without OMP_NUM_THREADS=1 showed.
    p = mp.get_context("fork").Process(target=lambda: (torch.set_num_threads(1), instrument(counter, kill_points), job()))
    p.start()
    p.join(300)
    return p.exitcode


def run_killed(job, reference_job, rng: random.Random, check) -> int:
    """Run `reference_job` once uninterrupted (counting its events, E), then `job` in forked
    processes killed at KILLS random event numbers drawn from 1..E (counted over the restarts,
    so every point is reached before the job ends), `check()` after each kill. Returns the kills."""
    ctx = mp.get_context("fork")
    counter = ctx.Value("l", 0)
    assert run_forked(reference_job, counter) == 0
    points = set(rng.sample(range(1, counter.value + 1), KILLS))
    counter.value, kills = 0, 0
    while (code := run_forked(job, counter, points)) != 0:
        assert code == -signal.SIGKILL, code
        kills += 1
        check()
    return kills


def finished_runs(results_dir) -> dict:
    out = {}
    for r in iter_records(results_dir):
        assert (r["config_key"], r["seed"]) not in out, "a run recorded twice"
        out[(r["config_key"], r["seed"])] = r
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    # About ten steps a run: 100 images of 5 classes per batch, 8 px.
    return TrainConfig(epochs=1, input_size=8, cache_size=8, embedding_dim=8, batch_size=100, samples_per_class=20,
                       cache_dir=cache, progress=False)


def test_bench_killed_at_random_points_resumes_to_the_same_records(tmp_path, base):
    faulty = replace(base, results_dir=str(tmp_path / "killed"))
    seen: dict = {}

    def check():
        now = finished_runs(faulty.results_dir)
        for key, run_id in seen.items():  # nothing finished is lost, or trained again
            assert now[key]["run_id"] == run_id
        seen.update({k: r["run_id"] for k, r in now.items()})

    kills = run_killed(lambda: run_bench(faulty, LOSSES, 1, log=lambda s: None, poll=0.1),
                       lambda: run_bench(replace(base, results_dir=str(tmp_path / "ref")), LOSSES, 1, log=lambda s: None),
                       random.Random(1), check)
    assert kills == KILLS
    reference = {k: r["final"] for k, r in finished_runs(tmp_path / "ref").items()}
    assert len(reference) == 2 and {k: r["final"] for k, r in finished_runs(faulty.results_dir).items()} == reference
    assert not list((tmp_path / "killed" / "runs").glob(".*.lock"))


def test_tune_killed_at_random_points_resumes_to_the_same_study(tmp_path, base):
    dims = [Dim("balance", "log", 1 / 16, 16)]
    base = replace(base, batch_size=60, train_split="train-sub", eval_split="val")  # val: 3 classes of 20

    def job(name):
        cfg = replace(base, results_dir=str(tmp_path / name))
        return run_search(training_objective(cfg, "BalancedNTXentLoss", dims, "map_at_r"), dims, "cd", budget=4,
                          storage=f"sqlite:///{tmp_path}/{name}.db", study_name="s", poll=0.01, grace=600)

    def complete(study):
        done = [(tuple(sorted(t.params.items())), t.user_attrs["run"], t.value)
                for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len({d[:2] for d in done}) == len(done), "a trial completed twice"
        return sorted(done)  # a killed trial re-runs later: the order may change, not the runs

    seen: list = []

    def check():
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/killed.db")
        now = complete(study)
        assert set(seen) <= set(now)  # finished trials stay finished, with their values
        seen[:] = now
        finished_runs(tmp_path / "killed")

    kills = run_killed(lambda: job("killed"), lambda: job("ref"), random.Random(2), check)
    assert kills == KILLS
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/killed.db")
    reference = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/ref.db")
    assert len(complete(reference)) == 4 and complete(study) == complete(reference)
    ours, theirs = pick(study), pick(reference)
    assert (ours.params, ours.value, ours.runs) == (theirs.params, theirs.value, theirs.runs)
    assert {k: r["final"] for k, r in finished_runs(tmp_path / "killed").items()} == \
        {k: r["final"] for k, r in finished_runs(tmp_path / "ref").items()}
