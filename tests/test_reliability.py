"""Faults and bad input (issue 16): every case ends in a one-line error before any work, no run
is lost or recorded twice, and a diverged run is a recorded failure, never a board row."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

import pmlbal.train as train_mod
from pmlbal.build import check_splits
from pmlbal.evaluation import MetricsError, evaluate
from pmlbal.cli import main
from pmlbal.records import RunLockedError, iter_records, lock_path, run_lock, write_record
from pmlbal.train import train
from pmlbal.config import TrainConfig
from pmlbal.loop import DivergedError
from tests.data.layouts import make_cub, make_sop
from tests.helpers import dead_pid

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--embedding-dim", "8"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny(results_dir, cache_dir, **kw) -> TrainConfig:
    """A digits run of about a second: one epoch, 16 px, 8-d embeddings."""
    return TrainConfig(**{**dict(epochs=1, input_size=16, cache_size=16, embedding_dim=8, results_dir=str(results_dir),
                                 cache_dir=cache_dir, progress=False), **kw})


def one_line_error(result, *words):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word.lower() in errors[0].lower(), result.output


# -- results folder not writable ---------------------------------------------------------------------
def test_unwritable_results_folder_fails_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = str(blocker / "results")  # under a file: unwritable for root too (chmod is not)

    def no_training(*a, **k):
        raise AssertionError("trained although the record could never be written")

    monkeypatch.setattr(train_mod, "build_run", no_training)
    for args in (["train"], ["bench", "--losses", "KCLLoss"], ["leaderboard"], ["tune", "--budget", "1"]):
        one_line_error(CliRunner().invoke(main, args + ["--results-dir", bad]), "not writable", str(blocker))


def test_a_record_that_cannot_be_written_is_kept_and_its_path_printed(tmp_path, monkeypatch):
    import pmlbal.records as records

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records, "atomic_write_text", full_disk)
    record = {"run_id": "digits-X-s0", "final": {"recall@1": 0.5}}
    with pytest.raises(OSError, match="No space left") as err:
        write_record(record, tmp_path)
    kept = Path(str(err.value).split("kept in ")[1].split(":")[0])
    assert json.loads(kept.read_text()) == record and str(tmp_path / "runs") in str(err.value)
    kept.unlink()


# -- samples_per_class above the classes ---------------------------------------------------------------
def test_samples_per_class_above_the_classes_is_refused_before_training(tmp_path):
    for m in (250, 500):  # digits classes hold about 180 images
        result = CliRunner().invoke(main, ["train", "--samples-per-class", str(m), "--batch-size", str(2 * m),
                                           "--results-dir", str(tmp_path)])
        one_line_error(result, f"samples_per_class ({m})", "largest class", "smallest")
    assert not list(tmp_path.rglob("*.json"))
    labels = np.repeat(np.arange(4), [2, 5, 9, 9])  # SOP-like: small classes are normal, m = 4 draws repeats
    with pytest.warns(UserWarning, match="1 of 4 classes .* fewer than samples_per_class \\(4\\)"):
        check_splits(labels, labels, TrainConfig(samples_per_class=4))
    with pytest.raises(ValueError, match=r"samples_per_class \(10\) is above the largest class .* \(9 images; smallest 2\)"):
        check_splits(labels, labels, TrainConfig(samples_per_class=10))


# -- diverging learning rate --------------------------------------------------------------------------
def test_non_finite_learning_rate_is_refused(tmp_path):
    for lr in ("inf", "nan", "-inf"):
        one_line_error(CliRunner().invoke(main, ["train", "--lr", lr, "--results-dir", str(tmp_path)]), "lr")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrainConfig(lr=math.inf).resolved()


@pytest.mark.slow
def test_diverged_run_stops_at_the_first_non_finite_loss_and_is_a_failure_not_a_row(tmp_path, cache_dir):
    result = CliRunner().invoke(main, ["train", "--lr", "1e6", *TINY, "--results-dir", str(tmp_path),
                                       "--cache-dir", cache_dir])
    one_line_error(result, "diverged", "epoch 1, step", "recorded in")
    assert "epoch 1: loss" not in result.output  # stopped inside the first epoch
    failed = list((tmp_path / "failed").glob("*.json"))
    assert len(failed) == 1 and not list((tmp_path / "runs").glob("*.json"))
    record = json.loads(failed[0].read_text())
    assert record["status"] == "diverged" and record["epoch"] == 1 and record["step"] >= 1
    assert not list(iter_records(tmp_path))  # the leaderboard never sees it
    board = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path)])
    assert board.exit_code != 0 and "no usable run records" in board.output


@pytest.mark.slow
def test_bench_records_a_divergence_and_goes_on(tmp_path, cache_dir, monkeypatch):
    from pmlbal import loop

    real_step = loop.train_step

    def step(forward, loss_fn, *rest):  # KCLLoss diverges at its third step, the others train
        loss = real_step(forward, loss_fn, *rest)
        step.n = getattr(step, "n", 0) + 1
        return loss * math.nan if type(loss_fn).__name__ == "KCLLoss" and step.n >= 3 else loss

    monkeypatch.setattr(loop, "train_step", step)
    from pmlbal.bench import run_bench

    lines = []
    base = tiny(tmp_path, cache_dir)
    records = run_bench(base, ["KCLLoss", "ContrastiveLoss"], seeds=1, log=lines.append)
    assert [r["config"]["loss"] for r in records] == ["ContrastiveLoss"]
    assert any("KCLLoss seed 0: training diverged: loss nan at epoch 1, step 3" in line for line in lines)
    assert len(list((tmp_path / "failed").glob("*.json"))) == 1
    again = []
    run_bench(base, ["KCLLoss", "ContrastiveLoss"], seeds=1, log=again.append)  # nothing trains twice
    assert "failed before, skipped" in again[0] and "recorded already" in again[1]


def test_tune_counts_every_training_against_the_budget_and_fails_diverged_trials(tmp_path, monkeypatch):
    import pmlbal.tune.run as tune_run
    from pmlbal.tune import Dim, pick, run_search, training_objective
    from pmlbal.tune.optuna import FAILED_FOR_GOOD

    started = []

    def fake_train(cfg, reuse=False):  # a closed form for the metric; a high lr diverges, as real training
        started.append(cfg)
        if cfg.lr > 1e-3:
            raise DivergedError("training diverged: loss nan at epoch 1, step 2", 1, 2)
        return {"run_id": f"r{len(started)}", "final": {"recall@1": -abs(math.log10(cfg.lr) + 3.5)}}

    monkeypatch.setattr(tune_run, "train", fake_train)
    dims = [Dim("lr", "log", 1e-4, 1e-2)]
    base = TrainConfig(results_dir=str(tmp_path))
    for search in ("cd", "tpe"):
        started.clear()
        study = run_search(training_objective(base, "BalancedNTXentLoss", dims), dims, search, budget=8,
                           storage=None, study_name=search, seed=1, poll=0.01)
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert len(started) == len(study.trials) <= 8, search  # a diverged trial is never tried again
        assert failed and all(FAILED_FOR_GOOD in t.user_attrs and t.params["lr"] > 1e-3 for t in failed)
        assert pick(study).params["lr"] <= 1e-3


# -- metrics that would be NaN --------------------------------------------------------------------------
def test_a_split_of_single_image_classes_is_an_error_not_a_nan_record(tmp_path):
    root = make_sop(tmp_path / "sop", train_classes=6, test_classes=5, per_class=2)
    test = (root / "Ebay_test.txt").read_text().splitlines()
    (root / "Ebay_test.txt").write_text("\n".join(test[:1] + test[1::2]) + "\n")  # one image per test class
    check = CliRunner().invoke(main, ["datasets", "check", "sop", "--root", str(root)])
    one_line_error(check, "single image", "nan")
    run = CliRunner().invoke(main, ["train", "--dataset", "sop", "--root", str(root), "--samples-per-class", "2",
                                    "--batch-size", "8", "--results-dir",
                                    str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    one_line_error(run, "single image", "nan")
    assert not (tmp_path / "c").exists()  # refused before decoding a single image


def test_nan_metrics_name_their_cause(tmp_path):
    from pmlbal.data.gpu_batches import ImageBank
    from pmlbal.models import EmbeddingModel

    model = EmbeddingModel("resnet10t", 8, None, False)
    bank = ImageBank(np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8), torch.device("cpu"))
    cfg = TrainConfig(input_size=16, cache_size=16).resolved()
    with pytest.raises(MetricsError, match="gave NaN .*recall@1.*: no image has another image of its class"):
        evaluate(model, bank, np.arange(6), cfg, torch.device("cpu"))
    assert evaluate(model, bank, np.repeat(np.arange(3), 2), cfg, torch.device("cpu"))["recall@1"] >= 0


# -- one run per configuration and seed ----------------------------------------------------------------
@pytest.mark.slow
def test_a_second_identical_run_replaces_the_first(tmp_path, cache_dir):
    cfg = tiny(tmp_path, cache_dir)
    first = train(cfg)
    again = train(cfg, reuse=True)  # bench and tune: read back, no training
    assert again["run_id"] == first["run_id"]
    second = train(cfg)  # `pmlbal train` again: a new run that replaces the old record
    assert second["replaced"] == [first["path"]] and not Path(first["path"]).exists()
    assert [r["run_id"] for r in iter_records(tmp_path)] == [second["run_id"]]
    assert second["final"] == first["final"]  # same configuration and seed: the same run
    from pmlbal.leaderboard import build_rows

    dup = {**first, "run_id": first["run_id"] + "-copy", "created": "0"}  # as written before the lock existed
    write_record(dup, tmp_path)
    assert build_rows(list(iter_records(tmp_path)), "digits")[0]["seeds"] == 1


def test_a_run_another_process_trains_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, cache_dir, monkeypatch):
    from pmlbal.records import run_key

    cfg = tiny(tmp_path, cache_dir).resolved()
    key = run_key(cfg)
    with run_lock(tmp_path, key, 0):
        monkeypatch.setattr(train_mod, "build_run", lambda c: pytest.fail("trained a locked run"))
        with pytest.raises(RunLockedError, match="another process"):
            train(cfg)
    assert not lock_path(tmp_path, key, 0).exists()
    import socket

    lock_path(tmp_path, key, 0).write_text(f"{socket.gethostname()}:{dead_pid()}")  # a SIGKILLed run's lock
    with run_lock(tmp_path, key, 0) as path:
        assert path.read_text() == f"{socket.gethostname()}:{os.getpid()}"  # the owner format of the tuner's workers
    lock_path(tmp_path, key, 0).write_text("otherhost:1")  # cannot be checked from here: trusted
    with pytest.raises(RunLockedError):
        with run_lock(tmp_path, key, 0):
            pass


@pytest.mark.slow
def test_two_bench_processes_share_the_work(tmp_path, cache_dir):
    import multiprocessing as mp

    from pmlbal.bench import run_bench

    base = tiny(tmp_path, cache_dir)
    train(replace(base, loss="KCLLoss", results_dir=str(tmp_path / "warm")))  # warm the cache first
    ctx = mp.get_context("fork")
    logs = ctx.Queue()

    def worker():
        torch.set_num_threads(1)  # a forked child of a process whose OpenMP pool ran hangs otherwise
        run_bench(base, ["KCLLoss", "ContrastiveLoss"], seeds=1, log=logs.put, poll=0.2)

    procs = [ctx.Process(target=worker) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = []
    while not logs.empty():
        lines.append(logs.get())
    trained = [line for line in lines if "Recall@1" in line]
    assert len(trained) == 2, lines  # each (loss, seed) trained once, by one of the two
    assert sum("recorded by another process" in line or "recorded already" in line for line in lines) == 2
    keys = [(r["config_key"], r["seed"]) for r in iter_records(tmp_path)]
    assert len(keys) == len(set(keys)) == 2


# -- cache ------------------------------------------------------------------------------------------------
def test_images_changed_in_place_rebuild_the_cache_and_dead_temporaries_go(tmp_path):
    from PIL import Image

    from pmlbal.data import create
    from pmlbal.data.cache import cache_path, load_or_build

    root = make_sop(tmp_path / "sop")
    ds = create("sop", root, "train")
    before = np.array(load_or_build(ds, 8, tmp_path / "c", progress=False))
    Image.new("RGB", (20, 20), (255, 0, 0)).save(ds.paths[0])  # same name, new content
    ds = create("sop", root, "train")
    dead = tmp_path / "c" / f".{cache_path(ds, 8, tmp_path / 'c').name}.{dead_pid()}.tmp"
    live = tmp_path / "c" / f".other.npy.{os.getppid()}.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    after = np.array(load_or_build(ds, 8, tmp_path / "c", progress=False))
    red = np.array([255, 0, 0])
    assert np.abs(after[0].astype(int) - red).max() <= 2 and np.abs(before[0].astype(int) - red).max() > 100
    assert (after[1:] == before[1:]).all()
    assert not dead.exists() and live.exists()


# -- tuning storage ----------------------------------------------------------------------------------------
def test_show_never_creates_or_alters_a_file(tmp_path):
    import sqlite3

    other = tmp_path / "notes.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    result = CliRunner().invoke(main, ["tune", "--show", "--storage", f"sqlite:///{other}"])
    one_line_error(result, "without optuna's tables")
    assert other.read_bytes() == before
    shutil.copy(REPO / "results" / "tuning.db", tmp_path / "t.db")
    before = (tmp_path / "t.db").read_bytes()
    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", f"sqlite:///{tmp_path}/t.db", "--dataset",
                                      "digits", "--loss", "BalancedNTXentLoss", "--results-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "pick:" in shown.output and (tmp_path / "t.db").read_bytes() == before


def test_spec_mismatch_names_fields_and_a_study_older_than_a_field_resumes(tmp_path):
    from pmlbal.tune import Dim, make_spec, open_study
    from pmlbal.tune.run import SPEC

    dims = [Dim("balance", "log", 1 / 16, 16)]
    base = TrainConfig(train_split="train-sub", eval_split="val")
    url = f"sqlite:///{tmp_path}/t.db"
    study = open_study(url, "s", make_spec(base, "BalancedNTXentLoss", dims, "cd", 8))
    old = study.user_attrs[SPEC]
    old["base"].pop("save_model")  # made before TrainConfig had this field
    study.set_user_attr(SPEC, old)
    open_study(url, "s", make_spec(base, "BalancedNTXentLoss", dims, "cd", 8))  # resumes
    with pytest.raises(ValueError, match=r"base \(epochs: None then, 3 now; lr: None then, 0.01 now\)"):
        open_study(url, "s", make_spec(replace(base, epochs=3, lr=0.01), "BalancedNTXentLoss", dims, "cd", 8))


def test_readme_tuning_commands_run_as_written_on_the_committed_study(tmp_path, monkeypatch):
    import re

    text = (REPO / "docs" / "tuning.md").read_text()  # the README's tuning section lives there
    commands = [line.split("#")[0].split() for line in text.splitlines()
                if re.match(r"pmlbal tune --dataset digits --loss BalancedNTXentLoss (--budget 36 --metric map_at_r|--show)",
                            line)]
    assert len(commands) == 2
    shutil.copytree(REPO / "results", tmp_path / "results")  # the study and its records, as in a fresh clone
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_mod, "build_run", lambda c: pytest.fail("the budget is spent: nothing to train"))
    before = (tmp_path / "results" / "tuning.db").read_bytes()
    shown = CliRunner().invoke(main, commands[1][1:])
    assert shown.exit_code == 0 and "pick:" in shown.output, shown.output
    assert (tmp_path / "results" / "tuning.db").read_bytes() == before
    ran = CliRunner().invoke(main, commands[0][1:])  # the committed study is of search version 2 (docs/tuning.md)
    assert ran.exit_code == 1 and "search version (2 then, 3 now" in ran.output, ran.output
    assert (tmp_path / "results" / "tuning.db").read_bytes() == before


# -- bad values with one-line errors ----------------------------------------------------------------------
def test_bad_values_end_in_one_line_errors(tmp_path):
    journal = tmp_path / "j.log"
    journal.write_text("not json\n")
    make_cub(tmp_path / "cub", per_class=2)
    labels = tmp_path / "cub" / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("\n5 3\n", "\n5 two\n"))
    (tmp_path / "cars").mkdir()
    (tmp_path / "cars" / "cars_annos.mat").write_bytes(b"12345678")
    cases = [
        (["train", "--device", "tpu"], ["--device", "auto, cpu, cuda, cuda:N or mps", "tpu"]),
        (["eval", "x.pt", "--device", "cuda:x"], ["--device"]),
        (["train", "--loss", "NTXentLoss", "--loss-arg", "tmperature=0.1"], ["did you mean 'temperature'"]),
        (["tune", "--budget", "1", "--storage", f"journal:{journal}"], ["not an optuna journal file", "line 1"]),
        (["tune", "--show", "--storage", f"journal:{journal}"], ["not an optuna journal file"]),
        (["tune", "--budget", "1", "--storage", "sqlite:////proc/nope/x.db"], ["cannot open storage", "/proc/nope"]),
        (["datasets", "check", "cub", "--root", str(tmp_path / "cub")], ["image_class_labels.txt", "'two'"]),
        (["datasets", "check", "cars", "--root", str(tmp_path / "cars")], ["cars_annos.mat", "truncated"]),
    ]
    for args, words in cases:
        extra = ["--results-dir", str(tmp_path / "r")] if args[0] in ("train", "tune") else []
        one_line_error(CliRunner().invoke(main, args + extra), *words)


def test_eval_on_val_of_a_model_trained_on_all_train_classes_warns(tmp_path, cache_dir):
    from pmlbal.checkpoints import save_checkpoint
    from pmlbal.models import EmbeddingModel

    cfg = tiny(tmp_path, cache_dir).resolved()
    model = EmbeddingModel(cfg.backbone, cfg.embedding_dim, None, False)
    full = save_checkpoint(model, cfg, "full")
    sub = save_checkpoint(model, replace(cfg, train_split="train-sub", eval_split="val"), "sub")
    seen = CliRunner().invoke(main, ["eval", str(full), "--split", "val", "--cache-dir", cache_dir])
    assert seen.exit_code == 0 and "were trained on" not in seen.output
    assert "full train split, which holds every val class" in seen.output
    clean = CliRunner().invoke(main, ["eval", str(sub), "--split", "val", "--cache-dir", cache_dir])
    assert clean.exit_code == 0 and "Warning" not in clean.output


# -- losses given non-finite embeddings --------------------------------------------------------------------
@pytest.mark.parametrize("name", __import__("pmlbal").list_losses())
def test_losses_refuse_non_finite_embeddings(name):
    from pmlbal.registry import create

    emb, labels = torch.randn(8, 4), torch.arange(4).repeat(2)
    ok = create(name)
    assert torch.isfinite(ok(emb, labels))
    for bad in (math.nan, math.inf):
        x = emb.clone()
        x[3, 1] = bad
        with pytest.raises(ValueError, match="embeddings has 1 row\\(s\\) with NaN or infinite values \\(first row 3\\)"):
            ok(x, labels)
        assert not torch.isfinite(create(name, check_finite=False)(x, labels))  # the opt-out
    with pytest.raises(ValueError, match="check_finite"):
        create(name, check_finite="yes")


def test_bench_refuses_an_empty_loss_list(tmp_path):
    for losses in ("", " , "):
        one_line_error(CliRunner().invoke(main, ["bench", "--losses", losses, "--results-dir", str(tmp_path)]),
                       "no loss to run", "--losses is empty")
    assert not list(tmp_path.rglob("*.json"))


def test_bench_exits_non_zero_when_every_run_diverged(tmp_path, monkeypatch):
    import pmlbal.bench as bench_mod

    monkeypatch.setattr(bench_mod, "run_bench", lambda *a, **k: [])  # every run diverged: nothing recorded
    result = CliRunner().invoke(main, ["bench", "--losses", "KCLLoss", "--results-dir", str(tmp_path)])
    one_line_error(result, "no run succeeded", "failed")


def test_leaderboard_names_the_data_sets_a_folder_holds(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    src = next(Path(__file__).parents[1].joinpath("results", "runs").glob("digits-*.json"))
    shutil.copy(src, runs)
    result = CliRunner().invoke(main, ["leaderboard", "--dataset", "cub", "--results-dir", str(tmp_path), "--no-plots"])
    one_line_error(result, "no cub test-split records", "holds records of: digits")
