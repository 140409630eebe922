"""The equal-results gate: every registered form passes; planted wrong forms fail."""
from functools import cache

import pytest
import torch

import impls
from bench import check
from bench.check import check_form, run_oracle
from impls.common import init_params
from tests.conftest import ALL_CELLS, skip_if_unavailable


gate_inputs = cache(check.gate_inputs)


@pytest.mark.parametrize("model,form,device", ALL_CELLS)
def test_every_form_passes_the_gate(model, form, device, real_data):
    skip_if_unavailable(model, form, device)
    result = check_form(model, form, device, *gate_inputs(model))
    assert result.status == "pass", result.reason
    assert result.param_max_abs <= result.atol + result.rtol  # parameters are O(1): a sanity bound


def _planted(model, base, change):
    """A subclass of ``base`` that is wrong in one small way."""
    class Planted(base):
        def __init__(self, params, lr, device):
            params, lr = change(dict(params), lr)
            super().__init__(params, lr, device)
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


def test_a_crashing_form_fails_with_its_error(real_data):
    class Broken(impls.form_class("linreg", "vectorized")):
        def step(self, X, y):
            raise RuntimeError("boom")

    result = check_form("linreg", "broken", "cpu", *gate_inputs("linreg"), cls=Broken)
    assert (result.status, result.reason) == ("fail", "RuntimeError: boom")


def test_gate_rejects_nan():
    class NaNForm(impls.form_class("linreg", "vectorized")):
        def step(self, X, y):
            super().step(X, y)
            return torch.tensor(float("nan"))

    result = check_form("linreg", "nan", "cpu", *gate_inputs("linreg", 5), cls=NaNForm)
    assert result.status == "fail" and "loss[" in result.reason


def test_compiled_form_does_not_recompile_on_partial_batch_or_new_lr():
    from impls.compiled import CompiledLinReg

    X, y = torch.randn(23, 2), torch.randn(23, 1)
    for lr in (0.03, 0.01):
        form = CompiledLinReg(init_params("linreg"), lr, "cpu")
        for size in (10, 10, 3, 7):
            form.step(X[:size], y[:size])
    assert form.compiled.compiles == 1


@pytest.mark.parametrize("form", list(impls.FORM_MODULES))
def test_softmax_is_stable_for_logits_in_the_thousands(form):
    skip_if_unavailable("softmax", form, "cpu")
    params = init_params("softmax")
    params["W"] = torch.arange(10, dtype=torch.float64).repeat(784, 1) * 5.0  # logits up to ~1e4
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]
    reference = run_oracle("softmax", batches, params)
    assert reference[0][0] > 1000  # the planted logits really are in the thousands
    result = check_form("softmax", form, "cpu", batches, params, reference)
    assert result.status == "pass", result.reason


def test_compiled_form_compiles_per_thread_count_without_a_false_recompile_error():
    from impls.compiled import CompiledLinReg

    X, y = torch.randn(10, 2), torch.randn(10, 1)
    threads = torch.get_num_threads()
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            form = CompiledLinReg(init_params("linreg"), 0.03, "cpu")
            form.step(X, y)
            assert form.compiled.compiles <= 1
    finally:
        torch.set_num_threads(threads)
