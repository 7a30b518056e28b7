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
