"""Do validation scores transfer to test? (issue 29: the transfer table.)

For a fixed set of BalancedNTXentLoss configurations on one data set, trains (or reads back from the
results folder: every run is an ordinary record, so the script resumes where it stopped and shares
runs with the boards) three things per configuration:

- ``val_single``: one run on today's fixed validation split (train-sub / val, seed 0);
- ``val_folds``: the mean over K class-disjoint validation folds (`TrainConfig.val_folds`, the tuner's
  `--val-folds K` objective, `pmlbal.tune.folds`);
- ``test_mean`` / ``test_std``: the test MAP@R over `--seeds` seeds (the board's runs).

It writes ``results/transfer_<dataset>.csv`` (columns ``config,val_single,val_folds,test_mean,test_std,
test_seeds``) and prints, for each validation scheme, Spearman's and Kendall's rank correlation with
the test means and the regret of picking by it (best test mean less the test mean of the scheme's
pick); from the same fold runs, at no extra cost, also the folds' rank average, each fold alone, and a
fresh split per configuration (the cheaper alternative of reshuffling: one run each). Configurations whose runs are not all recorded yet are listed as missing, not guessed.

    python benchmarks/transfer_table.py --dataset cjk-glyphs [--folds 4] [--seeds 3] [--val-epochs 2] [--train]
    python benchmarks/transfer_table.py --dataset cjk-glyphs --table-only   # no training: what is recorded

Validation runs (both columns) train `--val-epochs` epochs, the length the tuner's validation runs use
(`pmlbal tune --tune-epochs`); the test runs train the data set's default length, as the board's do. So
the table asks what a study asks: does a cheap validation run rank configurations as the final runs do?

Several processes may run it at once on one results folder: give each its own ``--shard I/N`` (every
N-th configuration from the I-th), so that they do not queue on each other's locked runs.
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from pmlbal.config import TrainConfig
from pmlbal.files import atomic_write_text
from pmlbal.records import run_key, find_existing
from pmlbal.tune.folds import fold_configs, score_folds

METRIC = "map_at_r"
#: balance x batch size at the default temperature (0.07), and temperature 1/16 at balance 2, 0.2 at balance 1.
CONFIGS = [({"balance": b}, batch) for b in (0.25, 0.5, 1.0, 2.0, 4.0) for batch in (64, 128)] + [
    ({"balance": 2.0, "temperature": 0.0625}, 128), ({"balance": 1.0, "temperature": 0.2}, 128)]


def label(kwargs: dict, batch: int) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) + f", batch={batch}"


def runs_of(dataset: str, kwargs: dict, batch: int, folds: int, seeds: int, results: str,
            val_epochs: int | None = None) -> dict[str, list]:
    """The configurations each column needs (seed 0 of the fixed split, the K folds, the test seeds)."""
    base = TrainConfig(dataset=dataset, loss="BalancedNTXentLoss", loss_kwargs=dict(kwargs), batch_size=batch,
                       results_dir=results, progress=False)
    val = replace(base, train_split="train-sub", eval_split="val", epochs=val_epochs)
    return {"val_single": [val], "val_folds": fold_configs(replace(val, val_folds=folds), 0),
            "test": [replace(base, seed=s) for s in range(seeds)]}


def lookup(cfg: TrainConfig, train: bool) -> dict | None:
    cfg = cfg.resolved()
    if train:
        from pmlbal.train import train as train_run

        return train_run(cfg, reuse=True)
    return find_existing(cfg.results_dir, run_key(cfg), cfg.seed)


def table(args: argparse.Namespace) -> list[dict]:
    rows = []
    shard, shards = args.shard
    for kwargs, batch in CONFIGS[shard::shards]:
        need = runs_of(args.dataset, kwargs, batch, args.folds, args.seeds, args.results_dir, args.val_epochs)
        got = {col: [lookup(c, args.train) for c in cfgs] for col, cfgs in need.items()}
        missing = {col: sum(r is None for r in rs) for col, rs in got.items() if any(r is None for r in rs)}
        row = {"config": label(kwargs, batch), "missing": missing}
        if not missing:
            test = [r["final"][METRIC] for r in got["test"]]
            folds = score_folds(got["val_folds"], METRIC)
            row.update(val_single=got["val_single"][0]["final"][METRIC], val_folds=folds.value, fold_values=folds.values, test_mean=float(np.mean(test)),
                       test_std=float(np.std(test, ddof=1)) if len(test) > 1 else 0.0, test_seeds=len(test))
        rows.append(row)
    return rows


def _scores(val: np.ndarray, test: np.ndarray) -> tuple[float, float, float]:
    """Spearman, Kendall and the regret (best test mean less the test mean of val's pick)."""
    from scipy.stats import kendalltau, spearmanr

    return spearmanr(val, test).statistic, kendalltau(val, test).statistic, test.max() - test[int(np.argmax(val))]


def schemes(done: list[dict], draws: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """(Spearman, Kendall, regret) of each validation scheme the recorded runs can score: the fixed
    split, the folds' mean, the folds' rank average, each fold alone as a fixed split, and a fresh
    split per configuration (one of the K folds drawn at random for each, a stand-in for Nagler et al.
    2024's reshuffling: configurations that draw the same fold share a split, where a true reshuffle
    would draw a new one; the mean over `draws` draws) -- the last ones at the cost of one run, from the fold runs already made."""
    from scipy.stats import rankdata

    test = np.array([r["test_mean"] for r in done])
    folds = np.array([r["fold_values"] for r in done])  # configurations x K
    out = {"val_single": _scores(np.array([r["val_single"] for r in done]), test),
           "val_folds": _scores(folds.mean(axis=1), test),
           "folds, rank average": _scores(np.mean([rankdata(c) for c in folds.T], axis=0), test)}
    for i in range(folds.shape[1]):
        out[f"fold {i} alone"] = _scores(folds[:, i], test)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, folds.shape[1], size=(draws, len(done)))
    drawn = np.array([_scores(folds[np.arange(len(done)), p], test) for p in picks])
    out["random fold per config"] = tuple(drawn.mean(axis=0))
    return out


def report(rows: list[dict]) -> str:
    done = [r for r in rows if not r["missing"]]
    lines = [f"{len(done)} of {len(rows)} configurations complete"]
    for r in rows:
        if r["missing"]:
            lines.append(f"  missing runs for {r['config']}: {r['missing']}")
    if len(done) < 3:
        return "\n".join(lines + ["too few complete configurations for rank correlations"])
    test = np.array([r["test_mean"] for r in done])
    best = done[int(np.argmax(test))]["config"]
    lines.append(f"best on test: {best} ({100 * test.max():.2f} MAP@R)")
    lines.append(f"{'scheme':24s} {'Spearman':>8s} {'Kendall':>8s} {'regret':>7s}")
    for name, (rho, tau, regret) in schemes(done).items():
        lines.append(f"{name:24s} {rho:+8.3f} {tau:+8.3f} {100 * regret:7.2f}")
    for col in ("val_single", "val_folds"):
        lines.append(f"{col} picks {done[int(np.argmax([r[col] for r in done]))]['config']}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["config", "val_single", "val_folds", "test_mean", "test_std", "test_seeds"])
    for r in rows:
        if not r["missing"]:
            w.writerow([r["config"], f"{r['val_single']:.6f}", f"{r['val_folds']:.6f}", f"{r['test_mean']:.6f}",
                        f"{r['test_std']:.6f}", r["test_seeds"]])
    atomic_write_text(path, out.getvalue())


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(i), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cjk-glyphs")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--val-epochs", type=int, default=None,
                    help="epochs of the validation runs (default: the data set's, as a test run)")
    ap.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                    help="only every N-th configuration from the I-th (one process each); the CSV is written "
                         "by a run without --shard")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--train", action="store_true", help="train the runs that are not recorded yet")
    ap.add_argument("--table-only", action="store_true", help="only read what is recorded (the default)")
    args = ap.parse_args()
    rows = table(args)
    if args.shard != (0, 1):
        print(report(rows))
        return
    write_csv(rows, Path(args.results_dir) / f"transfer_{args.dataset}.csv")
    print(report(rows))


if __name__ == "__main__":
    main()
