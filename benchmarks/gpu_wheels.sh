#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_suite.sh needs on the GPU machine and that its image lacks
# (PML, faiss-cpu, Optuna and Optuna's own needs), into .whl/ at the repository root (git-ignored).
# The GPU machine has no network: the device tool carries .whl/ there (`carry: [".whl"]`) and the
# suite installs it with pip --no-index. Versions are those of the Python this script runs with (the
# development venv), so the GPU run uses what the CPU tests use; the wheels are for CPython 3.12 on
# x86-64 manylinux, which is what the GPU image runs.
#
# Usage: . .venv/bin/activate && bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

# Everything else they need (torch, numpy, scikit-learn, tqdm, PyYAML, packaging, typing-extensions,
# MarkupSafe, click, timm, pillow, matplotlib, scipy, pytest, pytest-timeout, pytest-xdist) is in the
# image (/work/.library/device/KINDS.md, "Python packages already there").
NAMES=(pytorch-metric-learning faiss-cpu optuna alembic sqlalchemy colorlog mako)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64)

if ! git check-ignore -q .whl/probe; then
    echo "gpu_wheels: .whl/ is not git-ignored here; add '/.whl/' to .gitignore first" >&2
    exit 1
fi
specs=()
for name in "${NAMES[@]}"; do
    version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) || {
        echo "gpu_wheels: $name is not installed in $(command -v python); install the project's venv first" >&2
        exit 1
    }
    specs+=("$name==$version")
done
rm -rf .whl && mkdir .whl
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platform_args[@]}" -d .whl "${specs[@]}"
ls .whl | grep -c . | xargs -I{} echo "gpu_wheels: {} wheels in .whl/ ($(du -sh .whl | cut -f1)): ${specs[*]}"
