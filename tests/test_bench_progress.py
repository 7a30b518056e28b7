"""bench's overall bar: runs to train (recorded and failed ones left out) and log lines above it."""

from dataclasses import asdict, replace

from pmlbal.bench import _overall_bar
from pmlbal.config import TrainConfig
from pmlbal.records import NUMERICS_VERSION, run_key, new_run_id, write_record


def _record(cfg: TrainConfig, folder: str = "runs", version: int = NUMERICS_VERSION) -> dict:
    c = asdict(cfg)
    key = run_key(cfg)
    return {"schema": 1, "run_id": new_run_id(c, key), "config": c, "config_key": key, "seed": cfg.seed,
            "command": "pmlbal train", "final": {}, "numerics": {"version": version, "threads": 1, "device": "cpu"},
            **({"status": "diverged", "error": "nan"} if folder == "failed" else {})}


def test_the_bar_counts_only_the_runs_left_to_train(tmp_path):
    base = TrainConfig(dataset="digits", results_dir=str(tmp_path), progress=False)
    configs = {"KCLLoss": replace(base, loss="KCLLoss"), "DHELLoss": replace(base, loss="DHELLoss")}
    plan = [(spec, seed) for spec in configs for seed in range(2)]
    write_record(_record(replace(configs["KCLLoss"], seed=0).resolved()), tmp_path)
    write_record(_record(replace(configs["KCLLoss"], seed=1).resolved(), version=0), tmp_path)  # stale: retrained
    write_record(_record(replace(configs["DHELLoss"], seed=1).resolved(), "failed"), tmp_path, folder="failed")
    lines = []
    bar, say, todo = _overall_bar(base, configs, plan, lines.append)
    assert bar.total == todo == 2
    say("a line")
    assert lines == ["a line"]
    bar.close()


def test_each_trained_run_says_how_many_are_left_and_about_how_long(tmp_path, monkeypatch):
    import pmlbal.bench as bench

    clock = iter([0.0, 60.0, 120.0, 180.0])
    monkeypatch.setattr(bench.time, "monotonic", lambda: next(clock))

    def fake_train(cfg, **kw):
        return {"final": {"recall@1": 0.9, "map_at_r": 0.5}, "wall_time_s": 60.0, "run_id": "r"}

    monkeypatch.setattr(bench, "train", fake_train)
    base = TrainConfig(dataset="digits", results_dir=str(tmp_path), progress=False)
    lines = []
    bench.run_bench(base, ["KCLLoss", "DHELLoss"], seeds=1, log=lines.append)
    etas = [line.strip() for line in lines if "runs to train" in line]
    assert etas == ["1 of 2 runs to train done in 1m00s; about 1m00s left", "2 of 2 runs to train done in 2m00s"]
