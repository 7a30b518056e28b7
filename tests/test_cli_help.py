"""`pmlbal --help` and every subcommand's --help start neither torch nor PML (issues 28 and 46).

Each command imports what it runs when it runs; the help of all of them is built from the registry
(which imports only the light modules that register data sets and batch sources), the protocols' names
and click. A fresh process is the only honest check: in this test session other tests have long
imported torch, timm, optuna and the rest. The time itself is a benchmark (benchmarks/cli_help_time.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Libraries no --help may start (timm brings torchvision and huggingface_hub; optuna brings sqlalchemy).
NEVER = ("timm", "torchvision", "optuna", "matplotlib", "torch.utils.tensorboard")
#: Neither does `import pmlbal`: it registers where its components live and imports them on first use.
NOT_EVEN_PMLBAL = ("torch", "pytorch_metric_learning", "faiss", "sklearn", "scipy", "pandas", "numpy")

SCRIPT = r"""
import contextlib, io, json, sys
import click
import pmlbal
before = set(sys.modules)
from pmlbal.cli import main

def paths(group, prefix):
    for name, command in group.commands.items():
        yield prefix + [name]
        if isinstance(command, click.Group):
            yield from paths(command, prefix + [name])

codes = {}
with contextlib.redirect_stdout(io.StringIO()):
    for args in [[], *paths(main, [])]:
        codes[" ".join(args)] = main([*args, "--help"], standalone_mode=False)
print(json.dumps({"codes": codes, "before": sorted(before), "after": sorted(sys.modules)}))
"""


def _help_everywhere() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_nothing_heavier_than_the_package():
    got = _help_everywhere()
    assert set(got["codes"].values()) == {0}
    assert {"", "train", "eval", "bench", "sweep", "tune", "tune-worker", "leaderboard", "datasets check",
            "records migrate", "records remake"} <= set(got["codes"])
    before, after = set(got["before"]), set(got["after"])
    assert not [m for m in NEVER + NOT_EVEN_PMLBAL[:-1] if m in after]
    assert not [m for m in NOT_EVEN_PMLBAL if m in before]
