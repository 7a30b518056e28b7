"""The GPU suite runs unattended on a lent GPU: its script must parse, name only steps it has, and
call the benchmark scripts with options they accept (the dry run, GPU_SUITE_DRY=1, runs every step)."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


@pytest.mark.parametrize("script", ["gpu_suite.sh", "gpu_wheels.sh"])
def test_scripts_parse(script):
    out = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _suite_lines() -> list[str]:
    # Join continued lines so each command is one line.
    return SUITE.read_text().replace("\\\n", " ").splitlines()


def test_every_step_has_a_body_and_a_limit():
    text = SUITE.read_text()
    steps = re.search(r'ALL_STEPS="([^"]+)"', text).group(1).split()
    limits = dict(re.findall(r"\[([\w-]+)\]=(\d+)", text))
    bodies = re.findall(r"^\s+([\w-]+)\) ", text[text.index("run_step() {"):], re.M)
    assert len(steps) == len(set(steps)) >= 13
    assert set(steps) == set(limits) == set(bodies) - {"*"}
    assert all(0 < int(v) <= 150 for v in limits.values())  # no step may take a third of the call
    # The default budget fits one device call of 8 minutes, with time to pack the results, and the
    # default round's limits fit the budget: no step is skipped for want of time when each keeps to its own.
    budget = int(re.search(r"echo 1500 \|\| echo (\d+)", text).group(1))
    assert budget <= 470
    default = re.search(r'DEFAULT_STEPS="([^"]+)"', text).group(1).split()
    assert set(default) <= set(steps) and {"tests", "losses-ntxent", "losses-others", "tune-workers"} <= set(default)
    assert sum(int(limits[s]) for s in default) <= budget


def test_benchmark_calls_use_existing_scripts_and_options():
    calls = [line for line in _suite_lines() if "benchmarks/" in line and '"$PY"' in line]
    assert len(calls) >= 8
    arrays: dict[str, list[str]] = {}  # the dry-run and the GPU values both
    for name, value in re.findall(r"(\w+)=\(([^)]*)\)", SUITE.read_text()):
        arrays.setdefault(name, []).append(value)
    for line in calls:
        script = ROOT / re.search(r"(benchmarks/\w+\.py)", line).group(1)
        assert script.exists(), script
        source = script.read_text()
        options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", line))
        for name in re.findall(r'"\$\{(\w+)\[@\]\}"', line):
            options |= {tok for value in arrays[name] for tok in shlex.split(value) if tok.startswith("--")}
        for opt in options - {"--step"}:
            assert f'"{opt}"' in source, f"{script.name} has no option {opt}"


def test_unknown_step_is_refused_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GPU_SUITE_STEPS": "env nonsense", "OUT": str(tmp_path),
           "GPU_SUITE_WORK": str(tmp_path / "work")}
    out = subprocess.run(["bash", str(SUITE)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "no step named nonsense" in out.stderr
    assert not (tmp_path / "work" / "logs").exists()  # refused before anything ran


def test_every_shell_script_in_benchmarks_is_executable():
    import os
    from pathlib import Path

    scripts = sorted(Path(__file__).parents[1].joinpath("benchmarks").glob("*.sh"))
    assert scripts
    assert [s.name for s in scripts if not os.access(s, os.X_OK)] == []


@pytest.mark.slow
def test_dry_run_names_failures_first_and_keeps_each_step_in_its_limit(tmp_path):
    """GPU_SUITE_DRY=1 on the CPU, for the steps whose code paths a GPU round depends on most: each ends
    ok inside its (dry) limit, and the packed logs come back."""
    import os
    import sys

    env = {**os.environ, "GPU_SUITE_DRY": "1", "GPU_SUITE_STEPS": "env tests losses-ntxent losses-others",
           "OUT": str(tmp_path / "out"), "GPU_SUITE_WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(SUITE)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    status = (tmp_path / "work" / "logs" / "status.md").read_text()
    assert [line.split("|")[2].strip() for line in status.splitlines()[2:]] == ["ok"] * 4, status
    assert (tmp_path / "out" / "gpu_suite.tgz").is_file()
