#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: what the GPU side of linbench does there, in one folder.
#   scripts/gpu-check.sh [OUT_DIR] [STAGES]
# STAGES (comma-separated, default all): env, tests, check, run, grid, profile, recheck. Each stage's output
# goes to OUT_DIR/<stage>.log and its exit status to OUT_DIR/status.tsv; a failing stage does not stop
# the next. `run` is the default grid on cpu and cuda with its report, under OUT_DIR/results and
# OUT_DIR/reports; `grid` the GPU grid (both models, every form on cuda, batch 64 to 4096, resident and
# tensor loaders) with its report; `profile` the profiler view of the best cell of each form of it; `recheck`
# the gate again, after everything else ran on the GPU. `env` records the commit (and whether the tree is
# dirty: a reference report comes from a clean commit), the driver, CUDA, torch and Triton versions.
# PYTHON picks the interpreter (default .venv/bin/python, else python3).
# LINBENCH_GRID_ARGS adds flags to `linbench run` (e.g. "--quick"); GPU_GRID_ARGS replaces the `grid` stage's
# axis flags. Called again with the same OUT_DIR (one stage at a time, under `timeout`, say), it appends
# to OUT_DIR/status.tsv.
#
#   scripts/gpu-check.sh --short [OUT_DIR]
# The short check for scarce GPU time (at most 4 minutes of a cold H100): the epoch forms' GPU tests, bit-for-bit
# checks and figures, GPU clocks before and after, into one folder to commit as reports/reference-gpu-<card>-short/
# (bench/commands/gpu_check.py says what each stage records). It prints first the time it plans for each stage
# from the last H200 timings; without a GPU it is a dry run, its GPU stages skipped with their reason. The CUDA
# extension is reused from LINBENCH_EXTENSIONS_DIR when a build for the same torch, CUDA version and
# TORCH_CUDA_ARCH_LIST is there (made beforehand on a CPU machine with that torch and carried along).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${1:-}" = "--short" ]; then
    shift
    exec "$PYTHON" -m bench.commands.gpu_check "$@"
fi
out=${1:-results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}
stages=${2:-env,tests,check,run,grid,profile,recheck}
mkdir -p "$out"
[ -s "$out/status.tsv" ] || printf 'stage\texit\tseconds\n' >"$out/status.tsv"
linbench() { "$PYTHON" -m bench.cli "$@"; }

stage() {  # stage NAME COMMAND...: run it, log it, record its exit status and time
    local name=$1; shift
    case ",$stages," in *",$name,"*) ;; *) return 0 ;; esac
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$out/status.tsv"
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    tail -n 25 "$out/$name.log"
}

env_stage() {
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        echo "tree: dirty (uncommitted changes: a reference report should come from a clean commit)"
    else
        echo "tree: clean"
    fi
    nvidia-smi || echo "nvidia-smi: not found"
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    "$PYTHON" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda,
    'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    "$PYTHON" -c "import impls; print(impls.compiler_versions())"
    linbench env && linbench list
}

tests_stage() {
    # Every test that touches the GPU: the kernel file whole, and the cuda cells of the others.
    local ignore=()
    "$PYTHON" -c "import asv, jsonschema" 2>/dev/null || ignore=(--ignore tests/test_asv.py)
    "$PYTHON" -m pytest -p no:cacheprovider -q -rs "${ignore[@]}" tests/test_kernels.py; local rc=$?
    "$PYTHON" -m pytest -p no:cacheprovider -q -rs "${ignore[@]}" tests -k "cuda or gpu" \
        --deselect tests/test_kernels.py || rc=$?
    return "$rc"
}

run_stage() {
    # shellcheck disable=SC2086
    linbench run --devices cpu,cuda --no-progress --out "$out/results" --report-dir "$out/reports" \
        ${LINBENCH_GRID_ARGS:-}
}

grid_stage() {
    # shellcheck disable=SC2086
    linbench run --devices cuda ${GPU_GRID_ARGS:---loaders resident,tensor --workers 0 --batch-sizes 64,256,1024,4096} \
        --no-curves --no-progress --out "$out/grid" --report-dir "$out/grid-reports"
}

profile_stage() {  # the newest grid run: its best cell of each form, profiled into it, and its report again
    local run
    run=$(ls -td "$out"/grid/*/ 2>/dev/null | head -n 1) || true
    [ -n "$run" ] || { echo "no grid run to profile"; return 1; }
    linbench profile --run "$run" --best && linbench report "$run" --out "$out/grid-reports/$(basename "$run")"
}

stage env env_stage
stage tests tests_stage
stage check linbench check --devices cuda
stage run run_stage
stage grid grid_stage
stage profile profile_stage
stage recheck linbench check --devices cuda
echo "== status ($out/status.tsv)"
cat "$out/status.tsv"
! grep -qP '\t[1-9][0-9]*\t' "$out/status.tsv"
