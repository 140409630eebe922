"""The ``cuda`` and ``triton`` forms: the CUDA source builds, the Triton kernels pass the gate under the
interpreter, the custom ops pass ``opcheck``; on a GPU the kernels match the reference and do not sync."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import impls
from bench.check import check_form, run_oracle
from impls import cuda_kernels, triton_kernels
from impls.common import FP32, init_params, synthetic_linreg

ROOT = Path(__file__).resolve().parents[1]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
STEPS = {"linreg": cuda_kernels.linreg_step, "softmax": cuda_kernels.softmax_step}


def small_batches(model, sizes, seed=0):
    """Batches of the given sizes: synthetic linreg rows, or images in [0, 1] with random labels."""
    g = torch.Generator().manual_seed(seed)
    if model == "linreg":
        X, y = synthetic_linreg(seed, sum(sizes))
        return list(zip(X.split(sizes), y.split(sizes)))
    return [(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


def op_args(model, n, device, seed=0, scale=0.01):
    """(weight, b, X, y, lr) for one fused step on ``device``, weights ~ N(0, scale)."""
    (X, y), = small_batches(model, [n], seed)
    params = init_params(model, seed)
    weight = (params["w" if model == "linreg" else "W"] * (scale / 0.01)).float()
    X = X.reshape(n, -1)
    y = y.reshape(-1) if model == "linreg" else y
    lr = torch.tensor(0.03 if model == "linreg" else 0.1)
    return [t.to(device) for t in (weight, params["b"].float(), X, y, lr)]


def test_cuda_source_compiles_and_links():
    reason = cuda_kernels.toolkit_missing()
    if reason:
        pytest.skip(reason)
    ext = cuda_kernels.extension()  # the first build takes minutes; later runs load the cache
    assert Path(ext.__file__).is_relative_to(cuda_kernels.extensions_dir())
    assert callable(ext.linreg_step) and callable(ext.softmax_step)


INTERPRETED_GATE = """
import json, sys
import impls
from bench.check import check_form, run_oracle
from impls.common import init_params
from tests.test_kernels import small_batches
out = {}
for model, sizes in {"linreg": [10, 10, 10, 10, 3], "softmax": [16, 16, 7]}.items():
    batches, params = small_batches(model, sizes), init_params(model)
    r = check_form(model, "triton", "cpu", batches, params, run_oracle(model, batches, params))
    out[model] = {"unavailable": impls.unavailable(model, "triton", "cpu"), "status": r.status, "reason": r.reason}
print(json.dumps(out))
"""


def test_triton_form_passes_the_gate_under_the_interpreter():
    # TRITON_INTERPRET must be set before triton is imported, hence a fresh interpreter.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED_GATE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert set(results) == {"linreg", "softmax"}
    for model, r in results.items():
        assert r["unavailable"] is None, f"{model}: {r['unavailable']}"
        assert r["status"] == "pass", f"{model}: {r['reason']}"


def test_triton_on_cpu_says_how_to_run_it():
    if triton_kernels.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 is set: triton runs on CPU here")
    reason = impls.unavailable("softmax", "triton", "cpu")
    assert reason and "TRITON_INTERPRET=1" in reason


@pytest.mark.parametrize("model", STEPS)
def test_cpu_reference_of_the_custom_op_passes_the_gate(model):
    # The cuda form on CPU tensors runs the ops' CPU reference: the semantics the kernels must match.
    batches = small_batches(model, [10, 10, 3] if model == "linreg" else [16, 16, 7])
    params = init_params(model)
    result = check_form(model, "cuda", "cpu", batches, params, run_oracle(model, batches, params))
    assert result.status == "pass", result.reason


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_gpu)])
@pytest.mark.parametrize("model", STEPS)
def test_custom_op_opcheck(model, device):
    if device == "cuda" and (reason := cuda_kernels.toolkit_missing()):
        pytest.skip(reason)
    op = getattr(torch.ops.linbench, f"{model}_step").default
    results = torch.library.opcheck(op, op_args(model, 16, device),
                                    test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    assert set(results.values()) == {"SUCCESS"}, results


def test_custom_op_traces_under_torch_compile():
    args = op_args("softmax", 8, "cpu")
    want = [t.clone() for t in args]
    want_loss = cuda_kernels.softmax_step(*want)
    step = torch.compile(lambda *a: torch.ops.linbench.softmax_step(*a), backend="aot_eager", fullgraph=True)
    loss = step(*args)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(args[:2], want[:2])  # W and b were updated in place, as in eager


# -- GPU only -------------------------------------------------------------------------------------

KERNEL_FORMS = {"cuda": STEPS, "triton": {"linreg": triton_kernels.linreg_step,
                                          "softmax": triton_kernels.softmax_step}}
SIZES = {"linreg": (1, 10, 257, 1000), "softmax": (1, 7, 65, 256, 300)}  # ragged: past blocks and tiles


@needs_gpu
@pytest.mark.parametrize("form", KERNEL_FORMS)
@pytest.mark.parametrize("model", STEPS)
def test_kernels_match_the_cpu_reference_on_ragged_batches(model, form):
    skip_if_form_unavailable(model, form)
    for n in SIZES[model]:
        for scale in (0.01, 100.0):  # 100 gives softmax logits in the thousands
            got, want = op_args(model, n, "cuda", seed=n, scale=scale), op_args(model, n, "cpu", seed=n, scale=scale)
            got_loss, want_loss = KERNEL_FORMS[form][model](*got), STEPS[model](*want)
            for name, g, w in [("loss", got_loss, want_loss), ("weight", got[0], want[0]), ("b", got[1], want[1])]:
                torch.testing.assert_close(g.cpu(), w, rtol=FP32.rtol, atol=FP32.atol * max(1.0, scale),
                                           msg=lambda m: f"{form} {model} n={n} scale={scale} {name}: {m}")


def skip_if_form_unavailable(model, form):
    reason = impls.unavailable(model, form, "cuda")
    if reason:
        pytest.skip(f"{model}/{form}/cuda: {reason}")


def sleep_cycles_for(ms):
    """Cycles of ``torch.cuda._sleep`` that last about ``ms`` milliseconds (calibrated with events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 1_000_000
    torch.cuda._sleep(cycles)  # warm up
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return int(cycles * ms / start.elapsed_time(end))


@needs_gpu
def test_gpu_timing_needs_events_or_a_sync():
    cycles = sleep_cycles_for(50.0)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    launched = time.perf_counter() - t0
    torch.cuda.synchronize()
    host_ms, event_ms = (time.perf_counter() - t0) * 1e3, start.elapsed_time(end)
    assert 40.0 < event_ms < 60.0, event_ms  # the calibration holds
    assert abs(host_ms - event_ms) < 0.05 * event_ms + 1.0, (host_ms, event_ms)  # sync'd host time agrees
    assert launched * 1e3 < 0.2 * event_ms, (launched, event_ms)  # without a sync the host sees only the launch


@needs_gpu
@pytest.mark.parametrize("form", KERNEL_FORMS)
@pytest.mark.parametrize("model", STEPS)
def test_step_does_not_sync(model, form):
    skip_if_form_unavailable(model, form)
    instance = impls.build(model, form, init_params(model), 0.1, "cuda")
    (X, y), = small_batches(model, [256])
    X, y = X.cuda(), y.cuda()
    instance.step(X, y)  # builds and compiles the kernels
    cycles = sleep_cycles_for(100.0)
    torch.cuda.synchronize()
    torch.cuda._sleep(cycles)
    t0 = time.perf_counter()
    loss = instance.step(X, y)
    stepped_ms = (time.perf_counter() - t0) * 1e3
    assert not torch.cuda.current_stream().query(), "the sleep ended before the step returned"
    assert stepped_ms < 50.0, f"step took {stepped_ms:.1f} ms behind a 100 ms kernel: it waited for the GPU"
    assert torch.isfinite(loss).item()
