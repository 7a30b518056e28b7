"""The golden run (tests/golden_run.py): the current code against the committed digits record.

What it catches, on any CPU: a change to the data, the augmentation, the batch order, the initial
weights, the loss or the optimiser's first steps (the first steps' losses to 1e-5 relative), to the
evaluation (the untrained metrics, to float32 rounding), and training that stops learning. On a CPU
that rounds like the one that wrote a golden (`pmlbal.cpu.same_rounding` and the same library
versions), everything is compared exactly, the whole trained run included: any change to what
training computes fails. What it cannot catch on a foreign CPU: a small change to training after its
first steps, which moves the trained metrics no more than another CPU's rounding already does.

If it fails, a change moved what training computes. Either the change is a mistake, or it is meant: then
bump `pmlbal.records.NUMERICS_VERSION`, re-make the boards in the same change (the records of the old
version stop being reused and the boards mark them until they are re-run), and re-write the machine
goldens (`python -m tests.golden_run` on a machine; delete those of CPUs you cannot run on).
"""

import json

import pytest

from pmlbal.records import NUMERICS_VERSION, run_key, find_existing

from .golden_run import (GOLDEN, MACHINE_GOLDENS, THREADS, check_numerics_version, differences, exact_fields,
                         machine_golden, rounds_alike, run_golden)
from .test_bench_defaults import RESULTS


def _committed() -> dict:
    golden = find_existing(RESULTS, run_key(GOLDEN.resolved()), 0)
    assert golden is not None, (f"no record of numerics version {NUMERICS_VERSION} for `{GOLDEN.resolved()}` "
                                f"under {RESULTS}/runs: re-make the digits board")
    return golden


@pytest.mark.slow
def test_the_current_code_reproduces_the_golden_run_as_far_as_this_cpu_allows(tmp_path):
    committed = _committed()
    assert committed["numerics"]["threads"] == THREADS
    record = run_golden(tmp_path)
    assert record["config_key"] == committed["config_key"]
    assert record["numerics"]["version"] == committed["numerics"]["version"]
    assert len(record["steps"]) == len(committed["steps"]) and len(record["epochs"]) == len(committed["epochs"])
    assert differences(record, committed) == []
    for golden in [committed, machine_golden(record)]:
        if golden is not None and rounds_alike(record, golden):  # same CPU rounding, same libraries: exactly
            assert exact_fields(record) == exact_fields(golden)


def test_every_machine_golden_is_of_the_current_numerics_and_the_golden_configuration():
    for path in MACHINE_GOLDENS.glob("*.json"):
        golden = json.loads(path.read_text())
        check_numerics_version(golden)
        assert golden["config_key"] == run_key(GOLDEN.resolved()), path.name
        assert golden["numerics"]["cpu"]["id"] == path.stem and golden["numerics"]["threads"] == THREADS
        assert differences(golden, _committed()) == [], f"{path.name} is outside the tolerances of the record"


def test_the_tolerances_catch_what_they_are_for():
    committed = _committed()
    moved = json.loads(json.dumps(committed))
    moved["steps"][0]["loss"] *= 1 + 1e-4  # a change to the loss or the first batch
    moved["initial"]["effective_rank"] += 1e-4  # a change to the model, its init or the data
    moved["initial"]["map_at_r"] += 0.01  # a change to the evaluation
    moved["final"]["effective_rank"] = committed["initial"]["effective_rank"]  # no training
    found = differences(moved, committed)
    assert [d.split(":")[0] for d in found] == ["step 0 loss", "untrained effective_rank", "untrained map_at_r",
                                               "trained effective rank 3.60 < 15.0"]
    drift = json.loads(json.dumps(committed))
    drift["steps"][30]["loss"] *= 2  # later steps and the trained metrics drift on another CPU: allowed
    drift["final"]["map_at_r"] -= 0.05
    drift["initial"]["uniformity"] += 9.5e-7
    assert differences(drift, committed) == []
