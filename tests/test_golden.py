"""The golden run: a committed digits record that the current code must reproduce exactly.

If this fails, a change moved what training computes. Either the change is a mistake, or it is
meant: then bump `pmlbal.records.NUMERICS_VERSION` and re-make the boards in the same change (the
records of the old version stop being reused and the boards mark them ‡ until they are re-run).
"""

from dataclasses import replace

import pytest
import torch

from pmlbal.config import TrainConfig, identity
from pmlbal.records import NUMERICS_VERSION, config_key, find_existing
from pmlbal.train import train

from .test_bench_defaults import RESULTS

# A short run of the committed digits board (the balance sweep at 4 epochs): seconds on a CPU.
GOLDEN = TrainConfig(dataset="digits", loss="BalancedNTXentLoss", loss_kwargs={"balance": 1.0}, epochs=4, seed=0)


@pytest.mark.slow
def test_the_current_code_reproduces_the_committed_golden_run_exactly(tmp_path):
    key = config_key(identity(GOLDEN.resolved()))
    golden = find_existing(RESULTS, key, 0)
    assert golden is not None, (f"no record of numerics version {NUMERICS_VERSION} for `{GOLDEN.resolved()}` "
                                f"under {RESULTS}/runs: re-make the digits board")
    threads = golden["numerics"]["threads"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the thread count decides the rounding: the record's own
    try:
        record = train(replace(GOLDEN, results_dir=str(tmp_path), progress=False), reuse=False)
    finally:
        torch.set_num_threads(before)
    assert record["config_key"] == golden["config_key"]
    assert record["numerics"] == golden["numerics"]
    assert record["initial"] == golden["initial"]
    assert record["steps"] == golden["steps"], "the training steps' losses moved"
    assert record["epochs"] == golden["epochs"]
    assert record["final"] == golden["final"]
