"""Benchmark helpers the GPU suite relies on: the retrieval benchmark's cold/warm split and the
synthetic CUB layout."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pmlbal.data import create
from pmlbal.metrics import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_retrieval_benchmark_times_the_cold_call_in_a_fresh_process_and_warm_calls_apart():
    bench = _load("retrieval")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "retrieval.py"), "--one", "pmlbal", "--sizes", "small",
           "--device", "cpu", "--warm", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["s"] > 0 and got["warm_s"] > 0  # the first call and the median of the repeats, apart
    n, classes, ks = bench.SIZES["small"]
    x, y = bench.make_embeddings(n, classes)
    want = retrieval_metrics(x, y, ks=ks)
    for name, value in got["metrics"].items():
        assert value == pytest.approx(want[name], abs=1e-12), name
    # The table reads both times and the ratio of each to PML's.
    pml = {"s": 0.5, "warm_s": 0.2, "peak_mb": 1.0}
    assert bench._ratio(pml, got, "warm_s").strip() == f"{0.2 / got['warm_s']:.1f}x"
    assert f"{got['s']:.3f}" in bench._cells(got) and f"{got['warm_s']:.3f}" in bench._cells(got)


@pytest.mark.slow
def test_synthetic_cub_is_read_as_cub_with_its_class_split(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "synthetic_cub.py"), str(tmp_path), "--images", "430",
           "--size", "40x30"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    train, test = create("cub", str(tmp_path), "train"), create("cub", str(tmp_path), "test")
    assert len(train) + len(test) == 430
    assert sorted(set(train.labels)) == list(range(100)) and sorted(set(test.labels)) == list(range(100, 200))
    assert train.load_image(0).size == (40, 30)
    with pytest.raises(ValueError, match="even number of classes"):
        _load("synthetic_cub").make_cub(tmp_path / "bad", images=10, classes=3)


def _fake_grid(monkeypatch, table, locked=()):
    """tuning_table on a 2 x 1 x 2 grid (x seeds) whose 'training' stores a score per point, found
    again by find_existing as a record on disk would be."""
    monkeypatch.setitem(table.LATTICES, "digits", table.Lattice(range(0, 2), range(-1, 0), range(4, 6)))
    trained, store = [], {}

    def point(cfg):
        return cfg.loss_kwargs["balance"], cfg.batch_size

    def fake_train(cfg):
        if (point(cfg), cfg.seed) in locked:
            raise table.RunLockedError("held by another process")
        trained.append((point(cfg), cfg.seed))
        store[trained[-1]] = {"final": {"recall@1": 0.5, "map_at_r": cfg.loss_kwargs["balance"] / 10},
                              "run_id": str(trained[-1])}
        return store[trained[-1]]

    monkeypatch.setattr(table, "train", fake_train)
    monkeypatch.setattr(table, "run_key", point)
    monkeypatch.setattr(table, "find_existing", lambda d, key, seed: store.get((key, seed)))
    return trained


def _run_table(monkeypatch, table, out, *extra):
    monkeypatch.setattr(sys, "argv", ["tuning_table.py", "--seeds", "2", "--runs-dir", str(out.parent),
                                      "--out", str(out), *extra])
    table.main()


def test_tuning_table_shards_split_the_grid_and_only_a_full_pass_writes_the_table(tmp_path, monkeypatch):
    table = _load("tuning_table")
    trained = _fake_grid(monkeypatch, table)
    out = tmp_path / "grid.csv"
    _run_table(monkeypatch, table, out, "--shard", "0/2")
    assert len(trained) == 4 and not out.exists()  # every other point of 8; a shard writes no table
    _run_table(monkeypatch, table, out, "--shard", "1/2", "--reverse")
    order = [(2.0**b, 2**bs, seed) for b, _, bs in table.LATTICES["digits"].points() for seed in (0, 1)]
    assert len(set(trained)) == 8 and [(*p, s) for p, s in trained[4:]] == order[1::2][::-1]  # shard 1, last first
    _run_table(monkeypatch, table, out)
    assert len(trained) == 8  # the full pass found every point: nothing trained twice
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# python") and lines[1] == ",".join(table.FIELDS)
    keys = [tuple(int(v) for v in line.split(",")[:4]) for line in lines[2:]]
    assert keys == sorted(keys) and len(keys) == 8


def test_tuning_table_skips_a_point_another_process_trains_and_writes_no_table(tmp_path, monkeypatch, capsys):
    table = _load("tuning_table")
    trained = _fake_grid(monkeypatch, table, locked={((2.0, 16), 0)})
    out = tmp_path / "grid.csv"
    _run_table(monkeypatch, table, out)
    assert len(trained) == 7 and not out.exists()
    assert "another process is training this point; skipped" in capsys.readouterr().out


def test_tuning_table_seed_indices_train_seed_by_seed_and_write_no_table(tmp_path, monkeypatch, capsys):
    table = _load("tuning_table")
    trained = _fake_grid(monkeypatch, table)
    out = tmp_path / "grid.csv"
    _run_table(monkeypatch, table, out, "--seed-indices", "3,2")
    points = [(2.0**b, 2**bs) for b, _, bs in table.LATTICES["digits"].points()]
    assert trained == [(p, 3) for p in points] + [(p, 2) for p in points]  # seed-major, in the order given
    assert not out.exists() and "8 runs recorded at seeds [3, 2]" in capsys.readouterr().out
    for bad in ("2,x", "2,2", "-1"):
        with pytest.raises(SystemExit):
            _run_table(monkeypatch, table, out, "--seed-indices", bad)
        assert f"--seed-indices '{bad}'" in capsys.readouterr().err


def test_tuning_table_refuses_a_bad_shard(tmp_path, monkeypatch, capsys):
    table = _load("tuning_table")
    for bad in ("2/2", "one/2"):
        with pytest.raises(SystemExit):
            _run_table(monkeypatch, table, tmp_path / "grid.csv", "--shard", bad)
        assert f"--shard '{bad}'" in capsys.readouterr().err


def test_transfer_table_scores_each_validation_scheme_against_test():
    """Closed forms: folds ordered as test give Spearman = Kendall = 1 and no regret; a fold ordered
    the other way gives -1 and the largest regret; the fresh-fold draws lie between."""
    tt = _load("transfer_table")
    test = [0.1, 0.2, 0.3, 0.4]
    rows = [{"config": f"c{i}", "missing": {}, "test_mean": t, "val_single": t, "val_folds": 0.0,
             "fold_values": (t, t + 0.5, 1 - t)} for i, t in enumerate(test)]
    got = tt.schemes(rows, draws=200)
    assert got["val_single"] == pytest.approx((1.0, 1.0, 0.0))
    assert got["fold 0 alone"] == pytest.approx((1.0, 1.0, 0.0)) and got["fold 1 alone"] == pytest.approx((1.0, 1.0, 0.0))
    assert got["fold 2 alone"] == pytest.approx((-1.0, -1.0, 0.3))
    assert got["val_folds"][0] == pytest.approx(1.0)  # the mean, (t + 1.5) / 3, rises with t
    rho, tau, regret = got["random fold per config"]
    assert -1 < rho < 1 and -1 < tau < 1 and 0 < regret < 0.3
    assert "regret" in tt.report(rows) and "random fold per config" in tt.report(rows)


def _claim_record(loss, kwargs, seed, map_at_r, **config):
    cfg = {"dataset": "cjk-glyphs", "loss": loss, "loss_kwargs": kwargs, "eval_split": "test", "epochs": 4,
           "lr": 0.008, "tuned_by": None, "sampler": "m-per-class", "eval_every": 0, "batch_size": 128, **config}
    curve = [map_at_r * f for f in (0.5, 0.8, 0.9, 1.0)]
    return {"config": cfg, "seed": seed, "final": {"map_at_r": map_at_r, "effective_rank": 10.0 + seed},
            "initial": {"map_at_r": 0.01}, "steps": [{}] * 8,
            "epochs": [{"epoch": e + 1, "metrics": {"map_at_r": v}} for e, v in enumerate(curve)]}


def test_claims_tables_give_mean_and_sample_sd_per_cell_and_leave_other_configurations_out():
    claims = _load("claims")
    recs = [_claim_record("DHELLoss", {"balance": 4.0}, s, v, batch_size=64) for s, v in enumerate((0.70, 0.72, 0.74))]
    recs.append(_claim_record("DHELLoss", {"balance": 4.0}, 0, 0.10, batch_size=64, lr=0.001))  # another lr
    recs += [_claim_record("BalancedNTXentLoss", claims.BEST, s, 0.5 + s / 100, sampler="osgd", eval_every=1)
             for s in range(2)]
    lines, series = claims.batch_size_table(recs)
    dhel = next(line for line in lines if line.startswith("| DHELLoss"))
    assert "| — | 72.00 ± 2.00 | — | — |" in dhel and "11.00 ± 1.00" in dhel and "0/3/0/0" in dhel
    assert series["DHELLoss(balance=4)"][1] == pytest.approx([70.0, 72.0, 74.0])
    lines, series = claims.batches_table(recs)
    osgd = next(line for line in lines if line.startswith("| osgd"))
    assert "| 0, 1 | 1.00 ± 0.00 | 25.25 ± 0.35 |" in osgd and osgd.endswith("| 50.50 ± 0.71 | no fingerprint |")
    assert series["osgd"][0] == [0, 2, 4, 6, 8]
    assert next(line for line in lines if line.startswith("| spectral")).count("—") == 6


def test_claims_docs_without_a_block_are_refused_and_left_as_they_were(tmp_path):
    claims = _load("claims")
    page = tmp_path / "claims.md"
    page.write_text("<!-- claims:batches -->\nold\n<!-- /claims -->\n")
    with pytest.raises(SystemExit, match="no <!-- claims:batch-size -->"):
        claims.fill_docs(page, {"batches": ["| new |"], "batch-size": ["| x |"]})
    assert page.read_text() == "<!-- claims:batches -->\nold\n<!-- /claims -->\n"
    claims.fill_docs(page, {"batches": ["| new |"]})
    assert page.read_text() == "<!-- claims:batches -->\n| new |\n<!-- /claims -->\n"


def test_a_tuned_row_is_measured_against_the_strongest_untuned_row_of_its_family(tmp_path):
    from pmlbal.records import NUMERICS_VERSION, config_key, new_run_id, write_record

    rows = _load("tuned_rows")

    def record(loss, kwargs, seed, value, batch=128, tuned=False):
        cfg = {"dataset": "cjk-glyphs", "loss": loss, "loss_kwargs": kwargs, "seed": seed, "batch_size": batch,
               "eval_split": "test", **({"tuned_from": "sqlite:///x.db#s"} if tuned else {})}
        r = {"schema": 1, "run_id": new_run_id(cfg), "config": cfg, "config_key": config_key(cfg), "seed": seed,
             "command": "pmlbal train", "final": {"map_at_r": value},
             "numerics": {"version": NUMERICS_VERSION, "threads": 1, "device": "cpu"}}
        write_record(r, tmp_path)
        return r

    tuned = {s: record("BalancedNTXentLoss", {"balance": 6.9}, s, v, tuned=True) for s, v in ((0, 0.78), (1, 0.80))}
    for s, (pml, own, hand, wide) in enumerate(((0.74, 0.72, 0.90, 0.95), (0.72, 0.71, 0.91, 0.96))):
        record("NTXentLoss", {"temperature": 0.1}, s, pml)  # PML's class: untuned, the strongest
        record("BalancedNTXentLoss", {}, s, own)  # the class at its defaults: untuned
        record("BalancedNTXentLoss", {"balance": 6.9}, s, hand)  # the tuned values re-trained: not untuned
        record("NTXentLoss", {"temperature": 0.1}, s, wide, batch=256)  # another batch: not the same board row
    label, base = rows.strongest_untuned(str(tmp_path), tuned)
    assert label == "NTXentLoss(temperature=0.1)" and base == {0: 74.0, 1: 72.0}


def test_lattice_csv_writes_one_row_per_recorded_run_and_its_check_sees_drift(tmp_path, monkeypatch):
    lat = _load("lattice_csv")
    table = sys.modules["tuning_table"]
    monkeypatch.setitem(lat.LATTICES, "digits", table.Lattice(range(0, 2), range(-1, 0), range(4, 5)))
    recorded = {((1.0, 16), 0): 0.5, ((2.0, 16), 0): 0.6, ((2.0, 16), 1): 0.7}  # point (1, 16) lacks seed 1
    monkeypatch.setattr(lat, "run_key", lambda cfg: (cfg.loss_kwargs["balance"], cfg.batch_size))
    monkeypatch.setattr(lat, "find_existing", lambda d, key, seed: None if (key, seed) not in recorded else {
        "final": {"map_at_r": recorded[key, seed], "recall@1": 0.9}, "run_id": f"r{key}{seed}",
        "numerics": {"device": "cpu", "threads": 1, "cpu": {"id": f"cpu{seed}"}}})
    rows = lat.lattice_rows("digits", range(0, 3), runs_dir=str(tmp_path))
    assert [(r["point"], r["seed"], r["map_at_r"], r["cpu"]) for r in rows] == [
        ("b0_t-1_s4", 0, 0.5, "cpu0"), ("b1_t-1_s4", 0, 0.6, "cpu0"), ("b1_t-1_s4", 1, 0.7, "cpu1")]
    assert "3 runs over 2 of 2 points; points by runs: 1 run: 1, 2 runs: 1" in lat.summary(rows, "digits")
    out = tmp_path / "lattice.csv"
    monkeypatch.setattr(lat, "lattice_rows", lambda dataset, seeds: rows)
    for args, code in (([], 0), (["--check"], 0)):
        monkeypatch.setattr(sys, "argv", ["lattice_csv.py", "--dataset", "digits", "--out", str(out), *args])
        assert lat.main() == code
    monkeypatch.setattr(lat, "lattice_rows", lambda dataset, seeds: rows[:2])  # the records changed
    monkeypatch.setattr(sys, "argv", ["lattice_csv.py", "--dataset", "digits", "--out", str(out), "--check"])
    assert lat.main() == 1
