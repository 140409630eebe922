#!/usr/bin/env bash
# Creates or refreshes .venv (torch, the project, its test tools) and prepares Fashion-MNIST.
# Idempotent: a second run only checks. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
python=${PYTHON:-python3}

# System packages where apt and root are at hand (as on CI): the real data set, Chromium
# for the test that opens the report in a browser, and valgrind for instruction counts.
# Elsewhere the data comes from --data-dir/LINBENCH_DATA or a download.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pkg in ${LINBENCH_APT_PACKAGES:-dataset-fashion-mnist chromium valgrind}; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "setup: apt-get install$missing"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
            || echo "setup: warning: apt-get install$missing failed; continuing without"
    fi
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

# torch and torchvision: the pair known to work together here (pyproject only asks for a range).
# found without importing them (an import is seconds, and make bench runs this every time)
if ! "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('torchvision')))" >/dev/null 2>&1; then
    echo "setup: installing torch and torchvision"
    if [ "$(uname -m)" = x86_64 ]; then
        "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
    else
        "$venv/bin/pip" install -q torch==2.9.1 torchvision==0.24.1
    fi
fi

stamp="$venv/.linbench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing linbench and its tools"
    "$venv/bin/pip" install -q -e '.[dev]'
    touch "$stamp"
fi

# what `linbench data` does, without building its parser (every form's module) first
data=$("$venv/bin/python" -c "
import sys
from bench.data import DataError, fashion_mnist_root
try:
    print(fashion_mnist_root())
except DataError as e:
    sys.exit(f'setup: error: {e}')
")
echo "setup: Fashion-MNIST at $data"

# The native form's C++ steps (impls/native_step.cpp), built once per machine (about 20 s), so that a run's first
# native cell does not build them; built again when the source is newer than the last build's stamp.
native_stamp="$venv/.linbench-native-built"
if [ ! -f "$native_stamp" ] || [ impls/native_step.cpp -nt "$native_stamp" ]; then
    "$venv/bin/python" - <<'PY' && touch "$native_stamp" || echo "setup: warning: the native steps did not build; the native form will say why"
from impls import native
why = native.build_problem()
print(f"setup: native steps not built: {why}" if why else f"setup: native steps at {native.extension().__file__}")
PY
fi

# The CUDA kernels (impls/fused_step.cu), built once per machine where a CUDA toolkit is at hand, GPU or not:
# the forms and the tests load the cached build (a first build takes about 2 minutes on 2 cores). Built again
# when the source is newer than the last build's stamp.
cuda_stamp="$venv/.linbench-cuda-built"
if [ ! -f "$cuda_stamp" ] || [ impls/fused_step.cu -nt "$cuda_stamp" ]; then
    "$venv/bin/python" - <<'PY' && touch "$cuda_stamp" || echo "setup: warning: the CUDA kernels did not build; the cuda forms will say why"
from impls import cuda
why = cuda.toolkit_missing()
print(f"setup: CUDA kernels not built: {why}" if why else f"setup: CUDA kernels at {cuda.extension().__file__}")
PY
fi
