"""The ``native`` form: its C++ ops refuse bad arguments as check_step_args does, a step equals the
``vectorized`` form's, no autograd graph is built, the scratch buffer is reused, the epoch in one call takes the
step path's steps bit for bit, and a machine that cannot build the extension gets the form skipped with a one-line
reason."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import impls
from impls import native
from impls.common import FP32, check_step_args
from impls.contract import Setup
from impls.models import init_params
from tests.test_kernels import SPOILS, op_args, small_batches, spoil

ROOT = Path(__file__).resolve().parents[1]
LABEL_DTYPES = {"linreg": torch.float32, "softmax": torch.int64}


@pytest.fixture(scope="module")
def ext():
    """The extension, built once (about 20 s on 2 cores) or loaded from the cache."""
    if reason := native.build_problem():
        pytest.skip(f"native cannot be built here: {reason}")
    return native.extension()


def ops(ext):
    return {"linreg": ext.linreg_step, "softmax": ext.softmax_step}


@pytest.mark.parametrize("model, case", [(m, c) for m in ("linreg", "softmax") for c in [*SPOILS, "lr on meta"]]
                         + [("softmax", "label 10"), ("softmax", "label -1")])
def test_ops_refuse_bad_arguments_as_check_step_args_does(ext, model, case):
    args = op_args(model, 8, "cpu")
    if case == "lr on meta":
        args[4] = args[4].to("meta")
    elif case.startswith("label"):
        args[3][5] = int(case.split()[1])
    else:
        args, _ = spoil(model, case, args)
    before = [t.clone() for t in args[:2]]
    op = f"linbench_native::{model}_step"
    with pytest.raises(ValueError) as want:
        check_step_args(op, *args, LABEL_DTYPES[model])
    with pytest.raises(ValueError) as got:
        ops(ext)[model](*args)
    assert str(got.value) == str(want.value)
    assert "\n" not in str(got.value).strip()
    torch.testing.assert_close(args[:2], before)  # nothing was updated


def test_softmax_op_takes_the_weight_in_either_layout(ext):
    W, b, X, y, lr = op_args("softmax", 37, "cpu")
    row_major, column_major = [W.clone(), b.clone()], [W.t().contiguous().t(), b.clone()]
    torch.testing.assert_close(ext.softmax_step(*column_major, X, y, lr), ext.softmax_step(*row_major, X, y, lr))
    torch.testing.assert_close(column_major, row_major, rtol=FP32.rtol, atol=FP32.atol)
    with pytest.raises(ValueError, match=r"^linbench_native::softmax_step: W must be contiguous or the transpose of "
                                         r"a contiguous \(k, d\) tensor$"):
        ext.softmax_step(torch.cat([W, W], 1)[:, ::2], b, X, y, lr)


def test_linreg_op_wants_one_output(ext):
    w, b, X, y, lr = op_args("linreg", 8, "cpu")
    with pytest.raises(ValueError, match=r"^linbench_native::linreg_step: w must be \(d, 1\), got \(2, 2\)$"):
        ext.linreg_step(torch.cat([w, w], 1), torch.cat([b, b]), X, y, lr)


@pytest.mark.parametrize("n", [37, 1])
@pytest.mark.parametrize("model", ["linreg", "softmax"])
def test_steps_equal_the_vectorized_forms(ext, model, n):
    params = init_params(model)
    forms = {f: impls.build(model, f, params, Setup(0.1, "cpu")) for f in ("native", "vectorized")}
    for X, y in small_batches(model, [n, n, n], seed=n):
        losses = {f: torch.as_tensor(form.step(X, y)) for f, form in forms.items()}
        torch.testing.assert_close(losses["native"], losses["vectorized"], rtol=FP32.rtol, atol=FP32.atol)
    torch.testing.assert_close(forms["native"].state(), forms["vectorized"].state(), rtol=FP32.rtol, atol=FP32.atol)


@pytest.mark.parametrize("model", ["linreg", "softmax"])
def test_no_autograd_graph_is_built(ext, model):
    form = impls.build(model, "native", init_params(model), Setup(0.1, "cpu"))
    (X, y), = small_batches(model, [16])
    with torch.enable_grad():
        loss = form.step(X, y)
    assert not loss.requires_grad and loss.grad_fn is None
    assert not form.weight.requires_grad and not form.b.requires_grad
    assert form.weight.grad is None and form.b.grad is None


def test_softmax_scratch_is_reused_across_batch_sizes(ext):
    W, b, X, y, lr = op_args("softmax", 64, "cpu")
    scratch = torch.empty(0)
    ext.softmax_step(W, b, X, y, lr, scratch)
    assert scratch.shape == (64, 10)
    storage = scratch.untyped_storage().data_ptr()
    for n in (37, 1, 64):  # a ragged batch, a batch of one, and back: the storage of the largest serves them
        ext.softmax_step(W, b, X[:n], y[:n], lr, scratch)
        assert scratch.shape == (n, 10) and scratch.untyped_storage().data_ptr() == storage
    with_scratch, without = [t.clone() for t in (W, b)], [t.clone() for t in (W, b)]
    loss = ext.softmax_step(*with_scratch, X, y, lr, scratch)
    torch.testing.assert_close(ext.softmax_step(*without, X, y, lr), loss)  # scratch=None: allocated per call
    torch.testing.assert_close(with_scratch, without)


def test_a_compiler_error_is_one_line(tmp_path):
    source = tmp_path / "broken.cpp"
    source.write_text("#include <vector>\nint f() { return undeclared_name; }\n")
    with pytest.raises(native.BuildError) as error:
        native.build(source, tmp_path / "build", "linbench_native_planted")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cannot build broken.cpp: broken.cpp:2:") and "undeclared_name" in message


NO_COMPILER = """
import sys
import impls
from bench import cli
print(impls.unavailable("softmax", "native", "cpu"))
sys.exit(cli.main(["check", "--forms", "native"]))
"""


def test_without_a_compiler_the_form_is_skipped_with_the_reason(tmp_path):
    env = {**os.environ, "CXX": "/nonexistent", "LINBENCH_EXTENSIONS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", NO_COMPILER], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    reason = "no C++ compiler (/nonexistent not found; set CXX to one)"
    lines = proc.stdout.splitlines()
    assert lines[0] == reason
    for model in ("linreg", "softmax"):
        assert f"SKIPPED {model}/native/cpu: {reason}" in lines


def test_the_stack_step_refuses_a_label_past_the_last_layer_before_updating(ext):
    form = impls.build("mlp", "native", init_params("mlp"), Setup(0.1, "cpu"))
    before = form.state()
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9, got 0\.\.10"):
        form.step(torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 10, 2]))
    assert all(torch.equal(before[k], v) for k, v in form.state().items())


@pytest.mark.parametrize("model", ["linreg", "softmax", "mlp"])
def test_the_epoch_in_one_call_takes_the_steps_of_the_step_path(ext, model):
    """``train_epoch`` (one C++ call: rows gathered by index and scaled there) against the same form stepped batch
    by batch through the same epoch: the same losses and weights, bit for bit (the same float division of each
    pixel, the same step on the same rows), full batches and the ragged last one."""
    from bench.gate.cases import as_epoch, epoch_runs, gate_batches

    run, *_ = epoch_runs(gate_batches(model, 10 if model == "linreg" else 64, steps=3))
    data = as_epoch(run, "cpu")
    assert data.order.numel() > data.batch_size * 3  # three full batches and a ragged one
    by_step, whole = (impls.build(model, "native", init_params(model), Setup(0.1, "cpu")) for _ in range(2))
    losses = torch.stack([torch.as_tensor(by_step.step(X, y), dtype=torch.float32) for X, y in data.batches()])
    assert torch.equal(whole.train_epoch(data), losses)
    for name, value in by_step.state().items():
        assert torch.equal(whole.state()[name], value), name


def test_the_epoch_refuses_a_row_past_the_split_before_a_step(ext):
    from bench.gate.cases import as_epoch, epoch_runs, gate_batches

    data = as_epoch(epoch_runs(gate_batches("softmax", 64, steps=2))[0], "cpu")
    form = impls.build("softmax", "native", init_params("softmax"), Setup(0.1, "cpu"))
    before = form.state()
    data.order[-1] = len(data.y)
    with pytest.raises(ValueError, match=r"form_epoch: order's rows must be in 0\.\.\d+, got \d+\.\.\d+"):
        form.train_epoch(data)
    assert all(torch.equal(v, form.state()[k]) for k, v in before.items())
