"""The equal-results gate: every registered form passes at every batch size it is timed at; planted
wrong forms fail, in the gate's functions and through ``linbench check``."""
import io
import json
import sys
import types
from contextlib import redirect_stdout

import pytest
import torch

import impls
from bench import cli
from bench.gate import cases, check
from bench.gate.cases import batch_case, gate_cases, run_oracle
from bench.gate.check import check_form
from impls.contract import Setup
from impls.models import MODELS, init_params
from tests.conftest import ALL_CELLS, skip_if_unavailable


def gate_inputs(model, steps=cases.DEFAULT_STEPS):
    """(batches, params, reference) of the model's default ``batch B`` case."""
    trial = batch_case(model, MODELS[model].batch_size, steps).trials[0]
    return trial.batches, trial.params, trial.reference


@pytest.mark.parametrize("model,form,device", ALL_CELLS)
def test_every_form_passes_the_gate(model, form, device, real_data):
    skip_if_unavailable(model, form, device)  # gated as a run gates it: the pure-Python forms on MIN_STEPS batches
    steps = check.form_steps(MODELS[model], form, cases.DEFAULT_STEPS)
    gated = gate_cases(model, check.default_batch_sizes(model, form), steps)
    for result in check.check_if_available(check.key_of(model, form, device), gated):
        assert result.status == "pass", result.reason
        assert result.tol_used <= 1
    assert [c.name for c in gated][-1] == ("large logits" if MODELS[model].classes else f"batch {gated[-1].batch_size}")


def test_gate_batches_end_with_the_loaders_ragged_batch_and_a_batch_of_one(real_data):
    sizes = [len(y) for _, y in cases.gate_batches("softmax", 1024)]
    assert sizes == [1024] * 13 + [60000 % 1024, 1]
    assert [len(y) for _, y in cases.gate_batches("linreg", 10)] == [10] * 50 + [1]  # 1000 % 10 == 0: no tail
    assert cases.batch_case("linreg", 9).describe() == "50x9 + 2x1"  # 1000 % 9 == 1, then the batch of 1

def _planted(model, base, change):
    """A subclass of ``base`` that is wrong in one small way."""
    class Planted(base):
        def __init__(self, params, setup):
            params, lr = change(dict(params), setup.lr)
            super().__init__(params, Setup(lr, setup.device))
    return Planted


PLANTS = {
    "lr-x1.01": lambda p, lr: (p, lr * 1.01),
    "transposed-weight": lambda p, lr: (
        {k: (v.T.contiguous().reshape(v.shape) if v.dim() == 2 else v) for k, v in p.items()}, lr),
    "bias-off-by-1e-3": lambda p, lr: ({**p, "b": p["b"] + 1e-3}, lr),
}


@pytest.mark.parametrize("model,form,plant", [
    ("linreg", "module", "lr-x1.01"), ("linreg", "loop", "bias-off-by-1e-3"),
    ("softmax", "vectorized", "lr-x1.01"), ("softmax", "compiled", "transposed-weight"),
    ("softmax", "loop", "bias-off-by-1e-3"),
])
def test_planted_wrong_form_fails_the_gate(model, form, plant, real_data):
    wrong = _planted(model, impls.form_class(model, form), PLANTS[plant])
    result = check_form(model, form, "cpu", *gate_inputs(model), cls=wrong)
    assert result.status == "fail"
    assert "out of tolerance" in result.reason


def test_a_case_where_rounding_alone_goes_past_the_bound_widens_it_by_that_reach(real_data):
    """Softmax at batch 1 (lr 0.1, |x|^2 ~ 100: each step moves the logits by ~10): fp32 alone, the oracle's own
    steps from parameters 1 ulp apart, drifts past FP32's bound; the fp32 forms are held to 3x that reach, and a
    form 1% off in its learning rate still fails there. Linreg at batch 10 keeps the stated tolerance."""
    fp32 = impls.form_class("softmax", "module").tolerance
    one = batch_case("softmax", 1)
    reach = one.rounding("softmax", fp32)
    assert reach > 1
    tol = one.tolerance("softmax", fp32)
    assert tol.rtol == pytest.approx(fp32.rtol * cases.ROUNDING_SAFETY * reach) and "rounding alone" in tol.reason
    trial = one.trials[0]
    for form in ("module", "compiled"):
        result = check_form("softmax", form, "cpu", trial.batches, trial.params, trial.reference)
        assert result.status == "pass" and result.rtol == tol.rtol, result.reason
    wrong = _planted("softmax", impls.form_class("softmax", "module"), PLANTS["lr-x1.01"])
    assert check_form("softmax", "module", "cpu", trial.batches, trial.params, trial.reference,
                      cls=wrong).status == "fail"
    ten = batch_case("linreg", 10)
    assert ten.rounding("linreg", fp32) < 1 / cases.ROUNDING_SAFETY and ten.tolerance("linreg", fp32) == fp32


def test_a_crashing_form_fails_with_its_error(real_data):
    class Broken(impls.form_class("linreg", "vectorized")):
        def step(self, X, y):
            raise RuntimeError("boom")

    result = check_form("linreg", "broken", "cpu", *gate_inputs("linreg"), cls=Broken)
    assert (result.status, result.reason) == ("fail", "batch 10: RuntimeError: boom")


def test_gate_rejects_nan():
    class NaNForm(impls.form_class("linreg", "vectorized")):
        def step(self, X, y):
            super().step(X, y)
            return torch.tensor(float("nan"))

    result = check_form("linreg", "nan", "cpu", *gate_inputs("linreg", 5), cls=NaNForm)
    assert result.status == "fail" and "loss[" in result.reason


def test_compiled_form_does_not_recompile_on_partial_batch_or_new_lr():
    CompiledLinReg = impls.form_class("linreg", "compiled")
    X, y = torch.randn(23, 2), torch.randn(23, 1)
    form = CompiledLinReg(init_params("linreg"), Setup(0.03))
    form.step(X[:10], y[:10])
    before = len(form.compile_log())
    for lr in (0.03, 0.01):
        form = CompiledLinReg(init_params("linreg"), Setup(lr))
        for size in (10, 10, 3, 7, 23):
            form.step(X[:size], y[:size])
    assert len(form.compile_log()) == before <= 2


ANY_ORDER = """
import json, torch
from impls.compiled import CompiledStep
from impls.models import MODELS
out = {}
for order in ([1, 9, 37, 1, 2, 256], [9, 9, 1, 9, 37, 1]):
    step, w, b, lr = CompiledStep(MODELS["softmax"]), torch.zeros(10, 784), torch.zeros(10), torch.tensor(0.1)
    for n in order:  # the weight in nn.Linear's (k, d) layout, updated in place by the step
        X, y = torch.rand(n, 784), torch.randint(0, 10, (n,))
        want = MODELS["softmax"].batch_loss(X @ w.t() + b, y)
        loss = step((w, b), lr, X, y)
        assert torch.allclose(loss, want, rtol=1e-5, atol=1e-6), (n, float(loss), float(want))
    out[str(order)] = step.log
print(json.dumps(out))
"""


def test_compiled_step_takes_any_batch_order_with_two_graphs_and_logs_each():
    import subprocess

    # a fresh process: the first batch this process's compiled step ever sees matters
    proc = subprocess.run([sys.executable, "-c", ANY_ORDER], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = json.loads(proc.stdout.splitlines()[-1])
    for order, log in logs.items():
        first_larger = next(n for n in json.loads(order) if n > 1)
        assert sorted(e["batch_size"] for e in log) == [1, first_larger], order
        assert all(e["seconds"] > 0 for e in log)


def test_compiled_form_passes_the_gate_at_ragged_batch_sizes(real_data):
    results = check.run_check({"model": ["linreg"], "form": ["compiled"]}, batch_sizes=[1, 9, 10, 37])
    assert [(r.batch_size, r.status) for r in results] == [(1, "pass"), (9, "pass"), (10, "pass"), (37, "pass")]
    assert [r.batches for r in results] == ["51x1", "50x9 + 2x1", "50x10 + 1", "50x37 + 2x1"]
    log = impls.build("linreg", "compiled", init_params("linreg"), Setup(0.03)).compile_log()
    assert 1 <= len(log) <= 2 and 1 in {e["batch_size"] for e in log}


@pytest.mark.parametrize("form", list(impls.FORM_MODULES))
def test_softmax_is_stable_for_logits_in_the_thousands(form):
    skip_if_unavailable("softmax", form, "cpu")
    params = init_params("softmax")
    params["W"] = torch.arange(10, dtype=torch.float64).repeat(784, 1) * 5.0  # logits up to ~1e4
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]
    reference = run_oracle("softmax", batches, params)
    assert reference.losses[0] > 1000  # the planted logits really are in the thousands
    result = check_form("softmax", form, "cpu", batches, params, reference)
    assert result.status == "pass", result.reason


def test_compiled_form_compiles_per_thread_count_without_a_false_recompile_error():
    CompiledLinReg = impls.form_class("linreg", "compiled")
    X, y = torch.randn(10, 2), torch.randn(10, 1)
    threads = torch.get_num_threads()
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            form = CompiledLinReg(init_params("linreg"), Setup(0.03))
            form.step(X, y)
            assert form.compiled.compiles <= 2  # the batch graph and, where a batch of 1 came, its own
    finally:
        torch.set_num_threads(threads)


# -- planted bugs, each caught by `linbench check` -----------------------------------------------------

def _naive_cross_entropy(O, y):
    """The book's first softmax, without the max-subtraction: exp overflows at logits of +-1000."""
    E = torch.exp(O)
    return -torch.log((E / E.sum(dim=1, keepdim=True))[torch.arange(len(y)), y])


class NaiveSoftmax(impls.form_class("softmax", "vectorized")):
    loss = staticmethod(_naive_cross_entropy)


class PredictWithoutBias(impls.form_class("linreg", "compiled")):
    def predict(self, X):
        return X.to(self.device) @ self.params[0].t()


class DropsRowsPast16(impls.form_class("softmax", "module")):
    """A kernel that tiles by 16 and forgets the remainder of a batch larger than one tile."""
    def step(self, X, y):
        keep = len(y) - len(y) % 16 if len(y) >= 16 else len(y)
        return super().step(X[:keep], y[:keep])


class CompiledOnce(impls.form_class("linreg", "compiled")):
    """The compiled form as it was: one graph, so a batch of 1 after a batch of 9 recompiled and raised."""
    def __init__(self, params, setup):
        from impls.compiled import CompiledStep

        super().__init__(params, setup)
        self.compiled = _COMPILED_ONCE.setdefault("step", CompiledStep(MODELS["linreg"], max_compiles=1))


_COMPILED_ONCE = {}


def linbench_check(monkeypatch, name, model, cls, *args):
    """`linbench check` in this process with ``cls`` registered as form ``name``: (exit status, output)."""
    module = types.SimpleNamespace(FORM=cls)
    monkeypatch.setitem(sys.modules, f"planted_{name}", module)
    monkeypatch.setitem(impls.FORM_MODULES, name, f"planted_{name}")
    out = io.StringIO()
    with redirect_stdout(out):
        status = cli.main(["check", "--models", model, "--forms", name, *args])
    return status, out.getvalue()


@pytest.mark.parametrize("name,model,cls,args,where", [
    ("naive-softmax", "softmax", NaiveSoftmax, ["--batch-sizes", "256"], "all logits +1000: loss["),
    ("predict-without-bias", "linreg", PredictWithoutBias, [], "predict(batch first)"),
    ("drops-rows-past-16", "softmax", DropsRowsPast16, ["--batch-sizes", "100"], "batch 100: loss["),
    ("compiled-once", "linreg", CompiledOnce, ["--batch-sizes", "9"],
     "RecompileError: compiled linreg step recompiled (compile #2, batch 1;"),
])
def test_linbench_check_catches_a_planted_bug(monkeypatch, name, model, cls, args, where, real_data):
    status, out = linbench_check(monkeypatch, name, model, cls, *args)
    assert status == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert failed and all(line.startswith(f"FAIL {model}/{name}/cpu: ") for line in failed), out
    assert where in out, out


def test_a_row_dropping_form_passes_at_256_and_the_rows_say_which_batch_sizes_were_checked(monkeypatch, real_data):
    # 256 = 16 x 16, its ragged tail 96 = 6 x 16, and a batch of 1 is one short tile: the bug hides there,
    # which is why the gate runs at every batch size a run times.
    status, out = linbench_check(monkeypatch, "drops-rows-past-16", "softmax", DropsRowsPast16,
                                 "--batch-sizes", "256", "--format", "json")
    rows = json.loads(out)
    assert status == 0 and [(r["case"], r["batches"], r["status"]) for r in rows] == [
        ("batch 256", "50x256 + 96 + 1", "pass"), ("large logits", "3x64 + 32 + 1", "pass")]
