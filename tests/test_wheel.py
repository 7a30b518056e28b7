"""The package as a user installs it: a built wheel, away from the source tree, runs the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_built_wheel_installs_and_runs_without_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(REPO)], check=True, timeout=600)
    (wheel,) = wheels.glob("pmlbal-*.whl")
    site = tmp_path / "site"
    # --target: the wheel alone, its dependencies taken from this environment; PYTHONPATH puts it
    # ahead of the editable install, and the checks run from an empty folder.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def run(*args, timeout=120):
        out = subprocess.run([str(site / "bin" / "pmlbal"), *args], cwd=work, env=env, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    where = subprocess.run([sys.executable, "-c", "import pmlbal; print(pmlbal.__file__, pmlbal.__version__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site)  # the wheel's copy, not the checkout
    assert run("--version").strip() == f"pmlbal, version {where[1]}" and wheel.name.startswith(f"pmlbal-{where[1]}-")
    assert "tune" in run("--help")
    assert "digits" in run("datasets", "check", "digits")
    out = run("train", "--dataset", "digits", "--epochs", "1", "--batch-size", "20", "--samples-per-class", "10",
              "--results-dir", str(work / "results"), "--cache-dir", str(work / "cache"), timeout=300)
    assert "map_at_r=" in out and list((work / "results" / "runs").glob("digits-*.json"))
