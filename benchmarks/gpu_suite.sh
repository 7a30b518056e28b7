#!/usr/bin/env bash
# One unattended GPU round: refreshes every GPU figure of benchmarks/README.md in one call of at most
# 8 minutes on one H100 or H200 (see "GPU figures pending" there for the exact device-tool call).
#
#   OUT=/some/folder bash benchmarks/gpu_suite.sh          # on the GPU machine ($OUT: the tool's output folder)
#   GPU_SUITE_DRY=1 OUT=/tmp/dry bash benchmarks/gpu_suite.sh   # every step, tiny sizes, on the CPU
#
# Steps run in priority order, each under its own time limit (and never past the suite's budget, so
# one slow step cannot eat the rest: a step that no longer fits is recorded as skipped). Each step's
# raw output goes to logs/<step>.log; logs/summary.md gets date, device, versions, commit and every
# step's status and last lines. After every step, logs/ is packed into $OUT/gpu_suite.tgz and
# summary.md copied to $OUT, so a call cut short still brings back what ran.
#
# Environment:
#   GPU_SUITE_DRY=1        CPU dry run with tiny sizes (checks that every step runs, not a figure)
#   GPU_SUITE_BUDGET_S     seconds for all steps together (default 465; dry run 1500)
#   GPU_SUITE_STEPS        space-separated steps to run (default: DEFAULT_STEPS below, in the order of ALL_STEPS)
#   GPU_SUITE_COMMIT       the commit under test, for the summary (default: git rev-parse HEAD, if git works)
#   GPU_SUITE_WORK         scratch folder (default /tmp/gpu-suite): synthetic data, caches, run records
# Wheels: if .whl/ exists (benchmarks/gpu_wheels.sh makes it; the device call carries it), they are
# installed with pip --no-index into $GPU_SUITE_WORK/site first, as the device README prescribes.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=${GPU_SUITE_DRY:-0}
OUT=${OUT:-$ROOT/gpu-suite-out}
WORK=${GPU_SUITE_WORK:-/tmp/gpu-suite}
LOGS=$WORK/logs
BUDGET=${GPU_SUITE_BUDGET_S:-$([ "$DRY" = 1 ] && echo 1500 || echo 465)}
ALL_STEPS="env wheels tests losses-ntxent retrieval-cub retrieval-sop torchrun synthetic-cub main-job tune-workers
losses-others losses-chunk pipeline"
# The default round: the steps the open GPU targets need, whose limits add up to the budget (a test checks
# it); retrieval-sop and losses-chunk run when named in GPU_SUITE_STEPS.
DEFAULT_STEPS="env wheels tests losses-ntxent retrieval-cub torchrun synthetic-cub main-job tune-workers losses-others
pipeline"
STEPS=${GPU_SUITE_STEPS:-$DEFAULT_STEPS}
PY=${PYTHON:-python3}
START=$(date +%s)
SUMMARY=$LOGS/summary.md

export PYTHONPATH=$ROOT:$WORK/site PYTHONUNBUFFERED=1 PMLBAL_CACHE=$WORK/cache
if [ "$DRY" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEV=cpu
else
    DEV=cuda
fi

# Sizes: the GPU figures, or the smallest that still run every code path on the CPU.
if [ "$DRY" = 1 ]; then
    TESTS=(tests/test_distributed.py -k backend)
    NTX_SIZES=64; OTHER_SIZES=64; CHUNK_SIZES=256
    RET_CUB=(--sizes small --repeats 1 --warm 1); RET_SOP=(--sizes small --repeats 1 --warm 1 --pml-warm 0)
    TORCHRUN_DEV=cpu; CUB_IMAGES=400
    # Training at CUB's 224 px takes minutes a run on a small CPU: the dry run trains on digits
    # (the synthetic CUB is still written, and its layout read by a test).
    MAIN=(--dataset digits --epochs 1)
    TUNE=(--dataset digits --workers 1,2 --window 60 --backbone resnet10t --batch-size 32)
    PIPE=(--backbones resnet10t --images 64 --input-size 64 --batch-size 16 --steps 2)
else
    TESTS=(tests)
    NTX_SIZES=1024; OTHER_SIZES=1024,8192; CHUNK_SIZES=32768,65536
    RET_CUB=(--sizes cub --repeats 3 --warm 5); RET_SOP=(--sizes sop,200k --repeats 1 --warm 3 --pml-warm 0)
    TORCHRUN_DEV=cuda; CUB_IMAGES=11788
    MAIN=(--dataset cub --root "$WORK/cub" --epochs 3)
    TUNE=(--dataset cub --root "$WORK/cub" --workers 1,4 --window 20)
    PIPE=(--steps 15)
fi

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

pack() {
    cp "$SUMMARY" "$OUT/summary.md"
    tar czf "$OUT/gpu_suite.tgz.tmp" -C "$WORK" logs && mv "$OUT/gpu_suite.tgz.tmp" "$OUT/gpu_suite.tgz"
}

# step NAME LIMIT_S: run the step in a fresh `bash gpu_suite.sh --step NAME` under min(LIMIT_S, what the
# budget has left); GNU timeout kills its whole process group at the limit. Output in logs/NAME.log.
step() {
    local name=$1 cap=$2
    case " $(echo $STEPS) " in *" $name "*) ;; *) return 0 ;; esac
    local left=$(( $(remaining) - 10 ))
    if (( left < 15 )); then
        printf '| %s | skipped: out of budget | 0 |\n' "$name" >>"$LOGS/status.md"
        printf '\n### %s: skipped (out of budget)\n' "$name" >>"$SUMMARY"
        pack; return 0
    fi
    (( DRY == 1 )) && cap=$(( cap * 4 ))  # a small shared CPU starts Python processes slowly
    local limit=$(( cap < left ? cap : left )) t0=$(date +%s) rc
    echo "=== $name (limit ${limit}s, $(remaining)s of the budget left) ==="
    timeout -k 5 "$limit" bash "$ROOT/benchmarks/gpu_suite.sh" --step "$name" >"$LOGS/$name.log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 )) status=ok
    (( rc == 124 || rc == 137 )) && status="TIMED OUT at ${limit}s"
    (( rc != 0 && rc != 124 && rc != 137 )) && status="FAILED (exit $rc)"
    printf '| %s | %s | %d |\n' "$name" "$status" "$took" >>"$LOGS/status.md"
    { printf '\n### %s: %s, %d s\n\n```\n' "$name" "$status" "$took"
      # What failed comes first, named as it happened (the tests step prints one line a test), so a
      # step killed at its limit still says which tests failed before it.
      grep -E '(FAILED|ERROR|TIMEOUT) ' "$LOGS/$name.log" | grep -v '^=' | head -n 30 | cut -c1-240
      tail -n 25 "$LOGS/$name.log" | cut -c1-240
      printf '```\n'; } >>"$SUMMARY"
    echo "    $status, ${took}s"
    pack
}

# --- the steps --------------------------------------------------------------------------------------
env_report() {
    date -u +"date: %Y-%m-%d %H:%M:%S UTC"
    echo "commit: ${GPU_SUITE_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}"
    echo "dry run: $DRY, budget ${BUDGET}s, steps: $(echo $STEPS)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi: none"
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU',
'cpus', __import__('os').cpu_count(), 'fp32 matmul', torch.get_float32_matmul_precision())"
}

install_wheels() {
    local py
    py=$("$PY" -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
    if [ ! -d "$ROOT/.whl" ]; then
        echo "no .whl/: using the packages already installed"
    elif [ "$py" != 3.12 ]; then
        echo ".whl/ holds wheels for CPython 3.12 (the GPU image), this is $py: using the packages already installed"
    else
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            "$ROOT"/.whl/*.whl || return 1
    fi
    "$PY" -c "import pytorch_metric_learning as p, faiss, optuna, timm, pmlbal; print('PML', p.__version__,
'faiss', faiss.__version__, 'optuna', optuna.__version__, 'timm', timm.__version__, 'pmlbal', pmlbal.__file__)"
}

run_tests() {
    local par=()
    "$PY" -c "import xdist" 2>/dev/null && [ "$DRY" != 1 ] && par=(-n 12)
    # A hung test fails alone (and the report still prints) instead of using up the step's limit.
    "$PY" -c "import pytest_timeout" 2>/dev/null && par+=(--timeout 60)
    # -v: one line per test as it ends ("FAILED tests/...::name"), so the names survive a kill at the
    # limit; -rfE repeats them in pytest's summary.
    "$PY" -m pytest -v -p no:cacheprovider -rfE --tb=short "${par[@]}" "${TESTS[@]}"
}

torchrun_job() {
    "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m pmlbal.cli train --dataset digits \
        --epochs 1 --device "$TORCHRUN_DEV" --results-dir "$WORK/torchrun" --cache-dir "$WORK/cache" || return
    "$PY" - "$WORK/torchrun" <<'EOF'
import json, pathlib, sys
r = json.loads(sorted(pathlib.Path(sys.argv[1], "runs").glob("*.json"))[-1].read_text())
print("record: world_size", r["world_size"], "device", r["device"], "recall@1", round(r["final"]["recall@1"], 4))
EOF
}

main_job() {
    rm -rf "$WORK/main"
    "$PY" -m pmlbal.cli train --device "$DEV" "${MAIN[@]}" \
        --results-dir "$WORK/main" --cache-dir "$WORK/cache" || return
    "$PY" - "$WORK/main" <<'EOF'
import json, pathlib, sys
r = json.loads(sorted(pathlib.Path(sys.argv[1], "runs").glob("*.json"))[-1].read_text())
print(f"main job: {r['images_per_s']:.0f} img/s over {r['train_time_s']:.1f} s of training, wall {r['wall_time_s']:.1f} s, "
      f"device {r['device']}, recall@1 {r['final']['recall@1']:.4f}; {r['command']}")
EOF
}

run_step() {
    case $1 in
        env) env_report ;;
        wheels) install_wheels ;;
        tests) run_tests ;;
        losses-ntxent) "$PY" benchmarks/losses.py --device "$DEV" --sizes "$NTX_SIZES" --cases NTXent \
            --profile "$LOGS/profile-losses" ;;
        retrieval-cub) "$PY" benchmarks/retrieval.py --device "$DEV" "${RET_CUB[@]}" --profile "$LOGS/profile-retrieval" ;;
        retrieval-sop) "$PY" benchmarks/retrieval.py --device "$DEV" "${RET_SOP[@]}" ;;
        torchrun) torchrun_job ;;
        synthetic-cub) "$PY" benchmarks/synthetic_cub.py "$WORK/cub" --images "$CUB_IMAGES" ;;
        main-job) main_job ;;
        tune-workers) "$PY" benchmarks/tune_workers.py --device "$DEV" "${TUNE[@]}" \
            --out "$WORK/tune" --cache-dir "$WORK/cache" ;;
        losses-others) "$PY" benchmarks/losses.py --device "$DEV" --sizes "$OTHER_SIZES" --cases SupCon,Contrastive ;;
        losses-chunk) "$PY" benchmarks/losses.py --device "$DEV" --sizes "$CHUNK_SIZES" --cases NTXent+chunk ;;
        pipeline) "$PY" benchmarks/pipeline.py --device "$DEV" "${PIPE[@]}" ;;
        *) echo "gpu_suite: no step named $1; steps: $(echo $ALL_STEPS)" >&2; return 2 ;;
    esac
}
if [ "${1:-}" = --step ]; then
    run_step "$2"
    exit
fi
for name in $STEPS; do
    case " $(echo $ALL_STEPS) " in *" $name "*) ;; *) echo "gpu_suite: no step named $name; steps: $(echo $ALL_STEPS)" >&2; exit 2 ;; esac
done

rm -rf "$LOGS" && mkdir -p "$OUT" "$LOGS"
echo "# pmlbal GPU suite" >"$SUMMARY"
printf '| step | status | s |\n|---|---|---|\n' >"$LOGS/status.md"
declare -A LIMIT=([env]=15 [wheels]=40 [tests]=140 [losses-ntxent]=35 [retrieval-cub]=35 [retrieval-sop]=60
                  [torchrun]=25 [synthetic-cub]=25 [main-job]=35 [tune-workers]=50 [losses-others]=30
                  [losses-chunk]=30 [pipeline]=30)
for name in $ALL_STEPS; do
    step "$name" "${LIMIT[$name]}"
done

{ printf '\n## status (%d s in all)\n\n' $(( $(date +%s) - START )); cat "$LOGS/status.md"; } >>"$SUMMARY"
pack
echo
head -n 12 "$LOGS/env.log" 2>/dev/null
cat "$LOGS/status.md"
echo "summary: $OUT/summary.md, raw logs and profiles: $OUT/gpu_suite.tgz"
