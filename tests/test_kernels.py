"""The ``cuda`` and ``triton`` forms: the CUDA source builds for the GPUs present into the user cache, both
ops refuse bad arguments, the Triton kernels pass the gate under the interpreter and compile once per
epoch, the custom ops pass ``opcheck``; on a GPU the kernels match the reference and do not sync."""
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import impls
from bench.data import cache_dir
from bench.gate.cases import run_oracle
from bench.gate.check import check_form
from impls import cuda as cuda_kernels
from impls import triton as triton_kernels
from impls.common import FP32
from impls.contract import Setup
from impls.models import init_params
from impls.models.linreg import synthetic_data as synthetic_linreg

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
    assert Path(ext.__file__).is_relative_to(cuda_kernels.build_dir(cuda_kernels.chosen_arch_list()))
    assert all(callable(getattr(ext, f"{model}_{op}")) for model in STEPS for op in ("step", "gather_step", "epoch"))


# -- the CUDA build: arch list, toolkit, cache ----------------------------------------------------

@pytest.mark.parametrize("capabilities, newest, want", [
    ([], None, cuda_kernels.DEFAULT_ARCH_LIST),  # no GPU: the default
    ([(9, 0)], (12, 0), "9.0+PTX"),  # H100
    ([(8, 0)], (12, 0), "8.0+PTX"),  # A100
    ([(8, 6), (8, 9), (8, 6)], (12, 0), "8.6;8.9+PTX"),  # A10 and L4: each once, in order
    ([(12, 0), (8, 0)], (12, 0), "8.0;12.0+PTX"),  # RTX 50 and A100: sorted by number, not as text
    ([(10, 0)], None, "10.0+PTX"),  # B200
    ([(12, 1)], (12, 0), "12.0+PTX"),  # newer than this torch knows: its newest, run through PTX or sm_120
])
def test_arch_list_is_the_gpus_present_plus_ptx(capabilities, newest, want):
    archs = cuda_kernels.arch_list(capabilities, newest)
    assert archs == want
    assert all(cuda_kernels.serves(archs, c) for c in capabilities)


@pytest.mark.parametrize("archs, capability, want", [
    ("9.0", (9, 0), True), ("9.0", (8, 0), False), ("9.0", (10, 0), False),  # the old default: Hopper only
    ("8.0", (8, 9), True), ("8.6", (8, 0), False),  # code runs on a later minor of its major only
    ("8.0+PTX", (12, 0), True), ("9.0+PTX", (8, 9), False),  # PTX runs on later GPUs, not earlier
    ("9.0a", (9, 0), True), ("9.0a+PTX", (10, 0), False),  # arch-specific code: that GPU only
    ("7.5 8.0;9.0+PTX", (8, 6), True), ("Hopper", (9, 0), None),  # a name is not judged
])
def test_serves(archs, capability, want):
    assert cuda_kernels.serves(archs, capability) is want


NVCC_13 = ("13.0", {(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)})


@pytest.mark.parametrize("user_archs, devices, want", [
    ("9.0", [("NVIDIA A100-SXM4-80GB", (8, 0))],
     "GPU 0 (NVIDIA A100-SXM4-80GB, sm_80) is not in TORCH_CUDA_ARCH_LIST=9.0: add 8.0 or unset it"),
    (None, [("NVIDIA H100", (9, 0)), ("NVIDIA L4", (8, 9))], None),
    (None, [("NVIDIA A100-SXM4-80GB", (8, 0))], None),
    ("8.0;9.0", [("NVIDIA L4", (8, 9))], None),
    (None, [("Tesla V100-SXM2-16GB", (7, 0))], ("this nvcc cannot build sm_70 for GPU 0 (Tesla V100-SXM2-16GB) "
                                                "(TORCH_CUDA_ARCH_LIST=7.0+PTX): use a CUDA toolkit that supports it")),
])
def test_unavailable_names_a_gpu_the_build_cannot_serve(monkeypatch, user_archs, devices, want):
    monkeypatch.setattr(cuda_kernels, "toolkit_missing", lambda: None)
    monkeypatch.setattr(cuda_kernels, "gpus", lambda: devices)
    monkeypatch.setattr(cuda_kernels, "newest_supported", lambda: (12, 0))
    monkeypatch.setattr(cuda_kernels, "nvcc_info", lambda path: NVCC_13)
    if user_archs:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", user_archs)
    else:
        monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert cuda_kernels.CudaForm.unavailable("cuda") == want


@pytest.mark.parametrize("nvcc_release, torch_cuda, want", [
    ("13.0", "13.0", None), ("13.1", "13.0", None),
    ("12.4", "13.0", "nvcc is CUDA 12.4 but torch was built with CUDA 13.0: set CUDA_HOME to a CUDA 13.x toolkit"),
    ("13.0", None, "this torch was built without CUDA"),
])
def test_a_toolkit_that_does_not_match_torch_is_named(nvcc_release, torch_cuda, want):
    assert cuda_kernels.cuda_mismatch(nvcc_release, torch_cuda) == want


def test_the_arch_list_is_set_for_the_build_alone(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs, archs=os.environ.get("TORCH_CUDA_ARCH_LIST"))
        return "built"

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setenv("LINBENCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cuda_kernels, "gpus", lambda: [("NVIDIA A100", (8, 0)), ("NVIDIA H100", (9, 0))])
    monkeypatch.setattr(cuda_kernels, "newest_supported", lambda: (12, 0))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert cuda_kernels.extension.__wrapped__() == "built"
    assert seen["archs"] == "8.0;9.0+PTX"
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ  # not left behind for the process and its children
    build = Path(seen["build_directory"])
    assert build.is_dir() and build.parent == tmp_path
    assert build.name == f"torch{torch.__version__}-cuda{torch.version.cuda}-sm80_90+PTX"


def test_the_extension_cache_is_beside_the_data_cache(monkeypatch, tmp_path):
    for name in ("LINBENCH_EXTENSIONS_DIR", "LINBENCH_CACHE", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    want = tmp_path / "xdg/linbench/torch_extensions"
    assert cuda_kernels.extensions_dir() == cache_dir() / "torch_extensions" == want
    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path / "cache"))
    assert cuda_kernels.extensions_dir() == cache_dir() / "torch_extensions" == tmp_path / "cache/torch_extensions"
    monkeypatch.setenv("LINBENCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert cuda_kernels.extensions_dir() == tmp_path / "ext"
    assert cuda_kernels.build_dir("8.0+PTX") != cuda_kernels.build_dir("9.0+PTX")  # one build per arch list


WHEEL_BUILD = """
import json, torch.utils.cpp_extension
torch.utils.cpp_extension.load = lambda **kwargs: kwargs["build_directory"]  # where it would build
from impls import cuda as cuda_kernels
print(json.dumps({"module": cuda_kernels.__file__, "build": cuda_kernels.extension()}))
"""


def test_a_wheel_install_builds_in_the_user_cache(tmp_path):
    # impls as a wheel puts it: in a read-only site-packages, run from elsewhere with no LINBENCH_* set.
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "impls", site / "impls", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [site, *site.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = sorted(site.rglob("*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINBENCH_", "TORCH_CUDA_ARCH"))}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    try:
        proc = subprocess.run([sys.executable, "-c", WHEEL_BUILD], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    finally:
        for path in [site, *site.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert Path(out["module"]).is_relative_to(site)
    assert Path(out["build"]).parent == tmp_path / "cache/linbench/torch_extensions"
    assert Path(out["build"]).is_dir()
    assert sorted(site.rglob("*")) == before  # nothing written beside the package


# -- argument checks ------------------------------------------------------------------------------

OPS = {"cuda": STEPS, "triton": {"linreg": triton_kernels.linreg_step, "softmax": triton_kernels.softmax_step}}


def spoil(model, case, args):
    """``args`` (weight, b, X, y, lr) with one mistake, and the message it must raise."""
    weight, b, X, y, lr = args
    n, d = X.shape
    if case == "X not contiguous":
        return [weight, b, X.t().contiguous().t(), y, lr], "X must be contiguous"
    if case == "X float64":
        return [weight, b, X.double(), y, lr], "X must be"
    if case == "y dtype":
        return [weight, b, X, y.int() if model == "softmax" else y.double(), lr], "y must be"
    if case == "y shape":
        return [weight, b, X, y[:-1], lr], rf"y must be \({n},\)"
    if case == "weight shape":
        return [weight[:-1], b, X, y, lr], rf"must be \({d}, k\)"
    if case == "b shape":
        return [weight, torch.cat([b, b]), X, y, lr], "b must be"
    if case == "lr shape":
        return [weight, b, X, y, torch.cat([lr.reshape(1)] * 2)], "lr must have one element"
    if case == "no rows":
        return [weight, b, X[:0], y[:0], lr], "n >= 1"
    raise KeyError(case)


SPOILS = ["X not contiguous", "X float64", "y dtype", "y shape", "weight shape", "b shape", "lr shape", "no rows"]


@pytest.mark.parametrize("case", SPOILS)
@pytest.mark.parametrize("form", OPS)
@pytest.mark.parametrize("model", STEPS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_gpu)])
def test_ops_refuse_bad_arguments_in_one_line(model, form, device, case):
    # On CPU: the cuda form's reference op and the Triton wrapper (which checks before any launch, so
    # this needs no interpreter); on a GPU: the CUDA extension's checks and the Triton wrapper.
    if device == "cuda":
        skip_if_form_unavailable(model, form)
    args, message = spoil(model, case, op_args(model, 8, device))
    before = [t.clone() for t in args[:2]]
    with pytest.raises(ValueError, match=message) as error:
        OPS[form][model](*args)
    assert "\n" not in str(error.value).strip()
    torch.testing.assert_close(args[:2], before)  # nothing was updated


@pytest.mark.parametrize("form", OPS)
@pytest.mark.parametrize("label", [10, 15, -1])
def test_out_of_range_labels_are_refused_on_cpu(form, label):
    args = op_args("softmax", 8, "cpu")
    args[3][2] = label
    with pytest.raises(ValueError, match=rf"labels must be in 0\.\.9, got .*{label}"):
        OPS[form]["softmax"](*args)


@pytest.mark.parametrize("form, device, other", [
    ("triton", "cpu", "meta"),  # without a GPU the second device is meta (the wrapper checks before any launch)
    pytest.param("triton", "cuda", "cpu", marks=needs_gpu), pytest.param("cuda", "cuda", "cpu", marks=needs_gpu),
])
@pytest.mark.parametrize("model", STEPS)
def test_ops_refuse_tensors_on_another_device(model, form, device, other):
    if device == "cuda":
        skip_if_form_unavailable(model, form)
    there, here = str(torch.device(other)), str(op_args(model, 1, device)[2].device)
    for i in range(5):
        args = op_args(model, 8, device)
        args[i] = args[i].to(other)
        where = f"is on {here} but X is on {there}" if i == 2 else f"is on {there} but X is on {here}"
        with pytest.raises(ValueError, match=where):
            OPS[form][model](*args)


# -- Triton: the interpreter, recompilation -------------------------------------------------------

INTERPRETED = """
import json, sys
import torch
import impls
from bench.gate.cases import run_oracle
from bench.gate.check import check_form
from impls import triton as triton_kernels
from impls.models import init_params
from tests.test_kernels import op_args, small_batches
out = {}
for model, sizes in {"linreg": [10, 10, 10, 10, 3], "softmax": [16, 16, 7]}.items():
    batches, params = small_batches(model, sizes), init_params(model)
    r = check_form(model, "triton", "cpu", batches, params, run_oracle(model, batches, params))
    out[model] = {"unavailable": impls.unavailable(model, "triton", "cpu"), "status": r.status, "reason": r.reason}
args = op_args("softmax", 8, "cpu")
args[3][[2, 5]] = torch.tensor([10, -1])
out["bad_label_loss"] = triton_kernels._softmax_launch(*args).item()  # the kernels, past the host's check
out["bad_label_weights_nan"] = bool(args[0].isnan().any())
for model in ("linreg", "softmax"):  # a gather step (rows by index, pixels divided in the kernel) = the step
    weight, b, X, y, lr = op_args(model, 64, "cpu")
    divisor = 255.0 if model == "softmax" else 1.0
    split = (X * 255).round().to(torch.uint8) if model == "softmax" else X
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(1))[:24]
    w1, b1, w2, b2 = weight.clone(), b.clone(), weight.clone(), b.clone()
    gather = getattr(triton_kernels, f"{model}_gather_step")(w1, b1, split, y, idx, divisor, lr)
    rows = split.index_select(0, idx).float().div_(divisor) if model == "softmax" else split.index_select(0, idx)
    step = getattr(triton_kernels, f"{model}_step")(w2, b2, rows, y.index_select(0, idx), lr)
    out[f"{model}_gather_equals_step"] = bool(torch.equal(gather, step) and torch.equal(w1, w2) and torch.equal(b1, b2))
    bad = idx.clone()
    bad[3] = 64  # past the split: refused on the host, NaN from the kernels themselves
    launch = triton_kernels._softmax_launch if model == "softmax" else triton_kernels._linreg_launch
    out[f"{model}_bad_index_loss"] = launch(w1, b1, split, y, lr, bad, divisor).item()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def interpreted():
    """What the Triton kernels do under the interpreter (a fresh process: TRITON_INTERPRET must be set
    before triton is imported). NumPy's deprecated conversion of 1-element arrays to scalars (an error
    from NumPy 2.5 on) is made an error here too."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    strict = "error:Conversion of an array with ndim:DeprecationWarning"
    proc = subprocess.run([sys.executable, "-W", strict, "-c", INTERPRETED], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("model", STEPS)
def test_triton_form_passes_the_gate_under_the_interpreter(interpreted, model):
    assert interpreted[model]["unavailable"] is None, interpreted[model]["unavailable"]
    assert interpreted[model]["status"] == "pass", interpreted[model]["reason"]


def test_triton_kernels_make_out_of_range_labels_nan(interpreted):
    assert math.isnan(interpreted["bad_label_loss"])
    assert interpreted["bad_label_weights_nan"]  # not a silent update: the weights show it


@pytest.mark.parametrize("model", STEPS)
def test_triton_gather_steps_equal_the_steps_and_make_a_bad_index_nan(interpreted, model):
    assert interpreted[f"{model}_gather_equals_step"]  # bit for bit, the pixels divided inside the kernels
    assert math.isnan(interpreted[f"{model}_bad_index_loss"])


def triton_cache_keys(kernel, launches, **jit_options):
    """The distinct keys of Triton's kernel cache over ``launches`` ((args, kwargs) each): a GPU compiles
    the kernel once per key. Computed by Triton's own binder for a CUDA target, so no GPU is needed;
    ``jit_options`` replace the kernel's own (``do_not_specialize``...)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import (
        JITFunction,
        compute_cache_key,
        create_function_from_signature,
    )

    options = getattr(kernel, "kwargs", None) or {"do_not_specialize": kernel.do_not_specialize}
    jit = JITFunction(kernel.fn, **{**options, **jit_options})
    binder = create_function_from_signature(jit.signature, jit.params, make_backend(GPUTarget("cuda", 90, 32)))
    return {compute_cache_key({}, *binder(*args, **kwargs)[1:]) for args, kwargs in launches}


RAGGED_EPOCHS = {"linreg": (1000, 9), "softmax": (300, 64)}  # examples, batch size: last batches 1 and 44


@pytest.mark.parametrize("model", STEPS)
def test_a_ragged_epoch_compiles_each_triton_kernel_once(model, monkeypatch):
    examples, batch_size = RAGGED_EPOCHS[model]
    (X, y), = small_batches(model, [examples])
    kernels = [triton_kernels._linreg_step] if model == "linreg" else [triton_kernels._softmax_grad,
                                                                        triton_kernels._softmax_update]
    launches = {k: [] for k in kernels}
    for k in kernels:  # record each launch instead of running it
        monkeypatch.setattr(k, "run", lambda *args, grid, warmup, k=k, **kwargs: launches[k].append((args, kwargs)))
    form = impls.build(model, "triton", init_params(model), Setup(0.1, "cpu"))
    for idx in torch.randperm(examples, generator=torch.Generator().manual_seed(0)).split(batch_size):
        form.step(X[idx], y[idx])  # a gather, as the loaders make batches
    for k in kernels:
        assert len(launches[k]) == -(-examples // batch_size)
        assert len(triton_cache_keys(k, launches[k])) == 1, f"{k.__name__} compiles more than once an epoch"
        # the count can fail: specialised on n, the last batch (1, or 44 after 64s) would compile anew
        assert len(triton_cache_keys(k, launches[k], do_not_specialize=[])) == 2


def test_triton_on_cpu_says_how_to_run_it():
    if triton_kernels.INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 is set: triton runs on CPU here")
    reason = impls.unavailable("softmax", "triton", "cpu")
    assert reason and "TRITON_INTERPRET=1" in reason


@pytest.mark.parametrize("form", ["cuda", "cuda_epoch"])
@pytest.mark.parametrize("model", STEPS)
def test_cpu_reference_of_the_custom_op_passes_the_gate(model, form):
    # The cuda forms on CPU tensors run the ops' CPU reference: the semantics the kernels must match (step by
    # step, and through train_epoch: the gather step, or the whole epoch).
    batches = small_batches(model, [10, 10, 3] if model == "linreg" else [16, 16, 7])
    params = init_params(model)
    result = check_form(model, form, "cpu", batches, params, run_oracle(model, batches, params))
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

SIZES = {"linreg": (1, 10, 257, 1000), "softmax": (1, 7, 65, 256, 300)}  # ragged: past blocks and tiles


@needs_gpu
@pytest.mark.parametrize("form", OPS)
@pytest.mark.parametrize("model", STEPS)
def test_kernels_match_the_cpu_reference_on_ragged_batches(model, form):
    skip_if_form_unavailable(model, form)
    for n in SIZES[model]:
        for scale in (0.01, 100.0):  # 100 gives softmax logits in the thousands
            got, want = op_args(model, n, "cuda", seed=n, scale=scale), op_args(model, n, "cpu", seed=n, scale=scale)
            got_loss, want_loss = OPS[form][model](*got), STEPS[model](*want)
            for name, g, w in [("loss", got_loss, want_loss), ("weight", got[0], want[0]), ("b", got[1], want[1])]:
                torch.testing.assert_close(g.cpu(), w, rtol=FP32.rtol, atol=FP32.atol * max(1.0, scale),
                                           msg=lambda m, n=n, scale=scale, name=name:
                                           f"{form} {model} n={n} scale={scale} {name}: {m}")


@needs_gpu
@pytest.mark.parametrize("form", OPS)
def test_out_of_range_labels_give_a_nan_loss_on_the_gpu(form):
    skip_if_form_unavailable("softmax", form)
    args = op_args("softmax", 8, "cuda")
    args[3][[2, 5]] = torch.tensor([10, -1], device="cuda")
    assert torch.isnan(OPS[form]["softmax"](*args)).item()
    assert torch.isnan(args[0]).any().item()  # the weights show it too


@needs_gpu
@pytest.mark.parametrize("model", STEPS)
def test_a_ragged_epoch_compiles_nothing_after_the_first_step_on_the_gpu(model):
    skip_if_form_unavailable(model, "triton")
    kernels = [triton_kernels._linreg_step, triton_kernels._softmax_grad, triton_kernels._softmax_update]

    def compiled():
        return sum(len(caches[0]) for k in kernels for caches in k.device_caches.values())

    form = impls.build(model, "triton", init_params(model), Setup(0.1, "cuda"))
    batches = small_batches(model, [9, 9, 1] if model == "linreg" else [64, 64, 44, 1])
    form.step(*batches[0])
    before = compiled()
    for X, y in batches[1:]:
        form.step(X, y)
    assert compiled() == before


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
@pytest.mark.parametrize("form", OPS)
@pytest.mark.parametrize("model", STEPS)
def test_step_does_not_sync(model, form):
    skip_if_form_unavailable(model, form)
    instance = impls.build(model, form, init_params(model), Setup(0.1, "cuda"))
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


def test_launch_limits_are_checked_in_python_before_the_extension(monkeypatch):
    """Every check a launch of fused_step.cu could fail is made in Python first (a failing TORCH_CHECK crashed the
    process on an H100): a one-line ValueError from the ops, a skip reason from the form, on a stand-in GPU."""
    from types import SimpleNamespace

    from impls.models import MODELS

    props = SimpleNamespace(name="a small GPU", major=9, minor=0, shared_memory_per_block_optin=100 * 1024)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    X = torch.empty((256, 784), device="meta")
    assert cuda_kernels.launch_problem(torch.empty((784, 10), device="meta"), X, 256) is None
    big = torch.empty((4096, 10), device="meta")  # softmax at 64 x 64 pixels: 160 KiB of W, more than 100 - 24
    assert "shared memory" in cuda_kernels.launch_problem(big, torch.empty((1, 4096), device="meta"))
    assert "k <= 16" in cuda_kernels.launch_problem(torch.empty((784, 17), device="meta"), X)
    assert "batch_size" in cuda_kernels.launch_problem(torch.empty((784, 10), device="meta"), X, 0)
    with pytest.raises(ValueError, match=r"^linbench::softmax_epoch: W \(4096, 10\) needs 200 KiB"):
        cuda_kernels.check_launch("linbench::softmax_epoch", big, torch.empty((1, 4096), device="meta"), 256)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    form = impls.form_class("softmax", "cuda_epoch")
    reason = form.unsupported(MODELS["softmax"].at(64), Setup(0.1, "cuda"))
    assert reason and "shared memory" in reason and "a small GPU" in reason
    assert form.unsupported(MODELS["softmax"], Setup(0.1, "cuda")) is None
