"""The registry and the contract every form keeps."""
import pytest
import torch

import impls
from impls.common import FP32
from impls.contract import Form, Setup, contract_errors
from impls.models import MODELS, FashionMNIST, init_params
from tests.conftest import ALL_CELLS, skip_if_unavailable


def test_every_model_has_every_form_or_a_reasoned_exemption():
    for model in MODELS:
        for form in impls.FORM_MODULES:
            reason = impls.unsupported(model, form)
            if reason:
                assert len(reason) > 20 and reason == impls.unavailable(model, form, "cpu", here=False)
            else:
                assert impls.form_class(model, form).spec is MODELS[model]
    mlp = {form: impls.unsupported("mlp", form) for form in impls.FORM_MODULES}
    written = {f for f, reason in mlp.items() if not reason}
    assert {"loop", "vectorized", "module", "compiled", "native", "ddp"} <= written
    assert all(impls.unsupported("softmax", f) is None for f in impls.FORM_MODULES)
    # linreg's epoch is one block already (cuda_epoch): the cluster form alone declines it
    assert [f for f in impls.FORM_MODULES if impls.unsupported("linreg", f)] == ["cuda_cluster"]


@pytest.mark.parametrize("model,form,device", ALL_CELLS)
def test_contract(model, form, device):
    skip_if_unavailable(model, form, device)
    cls = impls.form_class(model, form)
    assert cls.__doc__ or impls._module(form).__doc__, "a form says where it comes from"
    assert contract_errors(cls) == []
    params = init_params(model)
    before = {k: v.clone() for k, v in params.items()}
    f = cls(params, Setup(MODELS[model].lr, device))
    assert isinstance(f, Form)
    n, spec = 8, MODELS[model]
    X = torch.rand(n, 1, 28, 28) if isinstance(spec.data, FashionMNIST) else torch.rand(n, spec.widths[0])
    y = torch.randint(0, spec.classes, (n,)) if spec.classes else torch.rand(n, 1)
    loss = f.step(X, y)
    assert torch.as_tensor(loss).dim() == 0
    assert f.predict(X).shape == (n, spec.widths[-1])
    state = f.state()
    assert state.keys() == params.keys()
    for k, v in state.items():
        assert v.device.type == "cpu" and v.shape == params[k].shape
    assert all(torch.equal(params[k], before[k]) for k in params), "a form must not modify the init it is given"
    assert any(not torch.allclose(state[k].double(), params[k]) for k in params), "a step moves the parameters"


@pytest.mark.parametrize("kind,call", [
    ("model", lambda: impls.form_class("ridge", "loop")),
    ("form", lambda: impls.form_class("linreg", "fortran")),
    ("device", lambda: impls.unavailable("linreg", "loop", "tpu")),
])
def test_unknown_names_are_refused(kind, call):
    with pytest.raises(impls.UnknownName, match=f"unknown {kind}"):
        call()


def test_cuda_is_skipped_with_a_reason_not_hidden():
    reason = impls.unavailable("softmax", "loop", "cuda")
    assert reason and "cpu" in reason
    if not torch.cuda.is_available():
        assert impls.unavailable("softmax", "module", "cuda") == "no CUDA device on this machine"


def test_a_form_that_cannot_be_imported_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setitem(impls.FORM_MODULES, "absent", "impls.no_such_module")
    reason = impls.unavailable("linreg", "absent", "cpu")
    assert reason.startswith("absent cannot be imported here") and "no_such_module" in reason


def test_the_contract_check_names_what_a_class_lacks():
    class Half:
        devices = ("gpu",)
        tolerance = FP32
        sample_cap = 0

        def step(self, X, y):
            return 0.0

    assert contract_errors(Half) == ["no predict()", "no state()", "devices must be a non-empty tuple of "
                                     "'cpu'/'cuda', got ('gpu',)", "sample_cap must be a positive int, got 0"]


def test_bench_names_no_form():
    """The harness reads forms through the registry and the hooks only: no form's name in its code (the
    embedded default grids in bench/defaults.py are data; "cuda" is also a device's name)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "bench"
    for path in set(root.rglob("*.py")) - {root / "defaults.py"}:
        for form in set(impls.FORM_MODULES) - {"cuda"}:
            assert not re.search(rf"""["']{form}["']""", path.read_text()), f"{path.name} names the {form} form"
