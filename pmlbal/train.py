"""One training run -> one result record (docs/method.md, 'Evaluation' and 'Data sets'): the orchestration, nothing else.

`train(TrainConfig)` composes the building blocks below it, as timm's train script composes its
factories: `build.build_run` (config resolved, process, data, model, loss, optimiser, batch source)
-> `untrained.untrained_metrics` -> `loop.train_epoch` per epoch (`resume` checkpoints between) ->
`Run.evaluate` -> `provenance.run_record` -> `records.replace_record`, under `records.run_lock`.
Only `train` (and what it alone owns) is imported from here: a configuration is `pmlbal.config.TrainConfig`,
the loop's and the evaluation's errors live in `loop` and `evaluation`, so the import graph shows what a
module really depends on.
"""

from __future__ import annotations

import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .build import Run, build_run
from .checkpoints import save_checkpoint
from .config import TrainConfig
from .evaluation import evaluate
from .loop import DivergedError, epoch_line, train_epoch
from .metrics.collapse import collapse_of
from .procs import remove_dead_temporaries
from .provenance import failure_record, run_record
from .records import (best_epoch, check_writable, run_key, find_existing, find_failed, replace_record, run_lock,
                      write_record)
from .resume import CheckpointWriteError, Progress, checkpoint_path, load_run_state, run_name, save_run_state
from .samplers.batches import batches_per_epoch
from .untrained import untrained_metrics


def train(config: TrainConfig, on_epoch: Callable[[dict], None] | None = None, *, resume: bool = False,
          tensorboard: str | Path | None = None, log: Callable[[str], None] | None = None,
          reuse: bool = False) -> dict[str, Any] | None:
    """Train `config.backbone` with `config.loss`, evaluate, write and return the run record.

    build_run -> evaluate the untrained model -> train_epoch x epochs -> evaluate -> run_record ->
    write. With `config.progress`, a tqdm bar on a terminal and, on every process, one
    `epoch_line` per epoch on stdout (a log or a pipe gets these lines instead of silence). The
    caller's global torch, numpy and Python generators are left as they were. Under `torchrun`
    each process trains on its slice of every global batch (`batch_size` is the global size),
    gradients are averaged by DistributedDataParallel and the loss, wrapped in PML's
    DistributedLossWrapper (`distributed.DistributedLoss`, which also averages the gradients of the
    loss's own parameters), sees the whole global batch; rank 0 evaluates and writes the record
    and returns it, the other ranks return None.

    A single-process run saves a checkpoint at the end of every epoch, the last included
    (`pmlbal.resume.checkpoint_path`) and removes it once the record is written; with `resume` a run
    whose checkpoint exists continues after the checkpoint's epoch and ends with the record an
    uninterrupted run would have written (timing fields aside). `tensorboard`: also log the loss and
    its terms per step, the metrics per evaluation and the configuration as hparams to
    TENSORBOARD/<run name> (needs the `tensorboard` extra). `log` receives notes such as "resuming", and
    a line before each step that can take minutes before the first epoch: preparing the image cache,
    evaluating the untrained network (not when its metrics are memoised).

    One run per configuration and seed: the run holds a lock file (`pmlbal.records.run_lock`;
    `RunLockedError` if another live process trains it) and its record replaces any earlier one
    (``record["replaced"]``, when there was one); with `reuse`, an existing record is returned (``record["reused"]``)
    instead of training, and a recorded divergence is raised again. A non-finite loss stops the run
    with `DivergedError` (epoch and step), recorded under DIR/failed/. The results folder is checked
    writable before any work; a record that cannot be written is kept in the temp folder.
    """
    cfg = config.resolved()
    board = None
    if tensorboard is not None:
        from .tensorboard_log import TensorBoardLog

        board = TensorBoardLog(tensorboard)  # fails here, before any work, if the package is missing
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(cfg, on_epoch, resume, board, log)
    # Fail before any work: a folder that cannot be written, or a run another process is training.
    check_writable(Path(cfg.results_dir) / "runs")
    if cfg.save_model:
        check_writable(Path(cfg.results_dir) / "models")
    key = run_key(cfg)
    with run_lock(cfg.results_dir, key, cfg.seed):
        if reuse:
            done = find_existing(cfg.results_dir, key, cfg.seed)
            if done is not None:
                return {**done, "reused": True}
            failed = find_failed(cfg.results_dir, key, cfg.seed)
            if failed is not None:
                raise DivergedError(f"{failed['error']} (recorded in {failed['path']})", failed.get("epoch"),
                                    failed.get("step"))
        return _train(cfg, on_epoch, resume, board, log)


def _train(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None, resume: bool, board,
           log: Callable[[str], None] | None) -> dict[str, Any] | None:
    # The device this process will use (its LOCAL_RANK under torchrun), without touching the others.
    cuda = [int(os.environ.get("LOCAL_RANK", 0))] if torch.cuda.is_available() else []
    host_rngs = np.random.get_state(), random.getstate()  # a resumed run sets them to the checkpoint's
    try:
        if cfg.cv_folds:
            if board is not None:
                raise ValueError("TensorBoard logging is for single-model runs, not cv_folds")
            with torch.random.fork_rng(devices=cuda):
                return _train_folds(cfg, on_epoch, log if resume else None)
        with torch.random.fork_rng(devices=cuda):
            return _train_model(cfg, on_epoch, resume, board, log)
    finally:
        np.random.set_state(host_rngs[0])
        random.setstate(host_rngs[1])
        if board is not None:
            board.close_quietly()


def _train_model(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None, resume: bool, board,
                 log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """One model: build the run, start it (or resume it), train its epochs, then evaluate and record it."""
    run = build_run(cfg, log=log)  # says when it prepares the image cache: minutes the first time
    cfg, t_start = run.cfg, time.perf_counter()
    ckpt = checkpoint_path(cfg) if run.world == 1 else None
    done = _start(run, ckpt, resume, log)
    steps_per_epoch = batches_per_epoch(len(run.train_set), cfg.batch_size)
    if board is not None and run.rank == 0:
        board.open(run_name(cfg), done.initial, start_step=done.epoch * steps_per_epoch)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=done.epoch * steps_per_epoch,
               desc=f"{cfg.dataset}/{cfg.loss} seed {cfg.seed}", disable=None if cfg.progress else True,
               leave=False)
    _train_epochs(run, done, bar, ckpt, board, on_epoch, t_start, steps_per_epoch)
    bar.close()
    if run.rank != 0:
        return None  # rank 0 evaluates and writes the one record of the run
    return _finish(run, done, ckpt, board, t_start, steps_per_epoch)


def _start(run: Run, ckpt: Path | None, resume: bool, log: Callable[[str], None] | None) -> Progress:
    """Where the run starts: the checkpoint's epoch when resuming one, else epoch 0 with the untrained
    network's metrics (rank 0 evaluates them)."""
    cfg = run.cfg
    if resume and ckpt is None and log and run.rank == 0:
        log("no resuming under torchrun (checkpoints are single-process): the run starts from epoch 1")
    if ckpt is not None:  # what a process killed while writing this run's checkpoint left
        remove_dead_temporaries(ckpt.parent, f".{ckpt.name}.*.tmp")
    if resume and ckpt is not None and ckpt.exists():
        done = load_run_state(ckpt, run)
        if log:
            log(f"resuming {ckpt} at epoch {done.epoch + 1}/{cfg.epochs}" if done.epoch < cfg.epochs else
                f"resuming {ckpt}: all {cfg.epochs} epochs are done, the final evaluation comes next")
        return done
    if ckpt is not None and ckpt.exists() and log:
        log(f"{ckpt} is left aside (an interrupted run of this configuration, or a damaged file): starting afresh; "
            "`pmlbal train` without --fresh, or train(..., resume=True), continues an interrupted run")
    return Progress(initial=untrained_metrics(run, log) if run.rank == 0 else None)


def _train_epochs(run: Run, done: Progress, bar, ckpt: Path | None, board, on_epoch: Callable[[dict], None] | None,
                  t_start: float, steps_per_epoch: int) -> None:
    """The epochs after `done.epoch`, each recorded in `done` (and checkpointed); a
    divergence is recorded under failed/ and raised again with the record's path."""
    cfg = run.cfg
    try:
        for epoch in range(done.epoch + 1, cfg.epochs + 1):
            entry, epoch_steps, seconds, images = train_epoch(run, epoch, bar)
            done.steps += epoch_steps
            done.train_time += seconds
            done.images_seen += images
            if run.rank == 0 and cfg.eval_every and epoch % cfg.eval_every == 0 and epoch != cfg.epochs:
                entry["metrics"] = run.evaluate()
            done.epochs.append(entry)
            done.epoch = epoch
            if cfg.progress:  # above the bar on a terminal; the only sign of life in a log
                tqdm.write(epoch_line(cfg, entry, seconds, run.rank, run.world), file=sys.stdout)
                sys.stdout.flush()  # a pipe or file is block-buffered: the line must arrive now
            if board is not None and run.rank == 0:
                board.epoch(entry, epoch_steps, first_step=(epoch - 1) * steps_per_epoch)
            if ckpt is not None:  # the last one too: a kill during the final evaluation keeps the epochs
                _checkpoint(ckpt, run, done, done.elapsed + time.perf_counter() - t_start,
                            optional=epoch == cfg.epochs)
            if on_epoch:
                on_epoch(entry)
    except DivergedError as err:
        bar.close()
        if ckpt is not None:  # resuming would only diverge again
            ckpt.unlink(missing_ok=True)
        if run.rank == 0:
            path = write_record(failure_record(run, err, done.epochs, done.elapsed + time.perf_counter() - t_start),
                                cfg.results_dir, folder="failed")
            raise DivergedError(f"{err} (recorded in {path})", err.epoch, err.step) from None
        raise


def _finish(run: Run, done: Progress, ckpt: Path | None, board, t_start: float, steps_per_epoch: int) -> dict[str, Any]:
    """The final evaluation and the run's record, written; the checkpoint removed, the TensorBoard log closed."""
    cfg = run.cfg
    final = run.evaluate(final=True)
    done.epochs[-1]["metrics"] = final
    record = run_record(run, done.epochs, done.steps, done.initial, final,
                        done.elapsed + time.perf_counter() - t_start, done.train_time, done.images_seen)
    best = best_epoch(done.epochs, cfg.lead_metric)
    if best is not None:
        record["best"] = best
    if cfg.save_model:
        record["model_path"] = str(save_checkpoint(run.model, cfg, record["run_id"]))
    _store(record, cfg.results_dir)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    if board is not None:
        board.close(cfg, final, cfg.epochs * steps_per_epoch)
    return record


def _train_folds(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None,
                 log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """`train` for `cv_folds` = k: k models, model i on the train classes outside fold i, one after
    the other (no checkpoints: a resumed cross-validation run starts again), then one evaluation of
    their concatenated embeddings; each epoch entry names its fold. The record's "cv_val" holds each
    fold model's metrics on its own held-out train classes (MLRC's validation score is their mean)."""
    t_start = time.perf_counter()
    if log:
        log("cross-validation runs keep no checkpoint: the run starts from fold 0, epoch 1")
    epochs, steps, train_time, images_seen, models, initial, held_out = [], [], 0.0, 0, [], None, []
    for fold in range(cfg.cv_folds):
        run = build_run(cfg, fold)  # seeded alike: every fold starts from the same network
        if initial is None and run.rank == 0:
            initial = untrained_metrics(run)
        total = cfg.epochs * batches_per_epoch(len(run.train_set), cfg.batch_size)
        bar = tqdm(total=total, desc=f"{cfg.dataset}/{cfg.loss} seed {cfg.seed} fold {fold}",
                   disable=None if cfg.progress else True, leave=False)
        for epoch in range(1, cfg.epochs + 1):
            entry, epoch_steps, seconds, images = train_epoch(run, epoch, bar)
            entry["fold"] = fold
            steps += epoch_steps
            train_time += seconds
            images_seen += images
            if run.rank == 0 and cfg.eval_every and epoch % cfg.eval_every == 0:
                entry["metrics"] = run.evaluate()  # this fold's model alone, one of k
            epochs.append(entry)
            if on_epoch:
                on_epoch(entry)
        bar.close()
        models.append(run.model)
        if run.rank == 0:  # MLRC's validation: each fold's model alone on the classes it did not see
            held_out.append(evaluate(run.model, *run.held_out, cfg, run.device))
    if run.rank != 0:
        return None
    final = evaluate(models, run.eval_bank, run.eval_set.labels, cfg, run.device)
    record = run_record(run, epochs, steps, initial, final, time.perf_counter() - t_start, train_time, images_seen)
    record["cv_val"] = held_out
    return _store(record, cfg.results_dir)


def _store(record: dict[str, Any], results_dir: str) -> dict[str, Any]:
    """Write `record` as its configuration and seed's one record; add its "path" and, when it replaced
    earlier records, their paths as "replaced" (returned to the caller, not written). The record carries
    its collapse verdict (`pmlbal.metrics.collapse`): a collapsed run is a failure that keeps its metrics."""
    record["collapse"] = collapse_of(record)
    path, replaced = replace_record(record, results_dir)
    record["path"] = str(path)
    if replaced:
        record["replaced"] = [str(p) for p in replaced]
    return record


def _checkpoint(path: Path, run: Run, done: Progress, elapsed: float, optional: bool = False) -> None:
    """The epoch checkpoint; if it cannot be written, the epochs so far go to an interrupted/ record
    (or, when the disk refuses that too, to the system's temp folder) and the run stops in one line.
    An `optional` one (after the last epoch, where only the evaluation and an 8 KB record are left)
    that cannot be written is skipped with a warning: the run goes on to its record."""
    try:
        save_run_state(path, run, done, elapsed)
    except CheckpointWriteError as err:
        if optional:
            path.unlink(missing_ok=True)  # an earlier epoch's state must not pass for the last one's
            warnings.warn(f"{err}; evaluating without it", RuntimeWarning, stacklevel=2)
            return
        try:
            record = write_record(failure_record(run, err, done.epochs, elapsed, status="interrupted"),
                                  run.cfg.results_dir, folder="interrupted")
            again = ("run it again to continue from the last checkpoint" if path.exists() else
                     "no checkpoint to continue from: with room on the disk, the run starts afresh")
            kept = f"epochs 1-{done.epoch} recorded in {record}; {again}"
        except OSError as record_err:  # write_record names the temp file it kept instead
            kept = str(record_err)
        raise CheckpointWriteError(err.path, err.needed, err.cause, note=kept) from None
