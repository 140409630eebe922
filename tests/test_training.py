"""Full training quality: every form learns linreg; the module form learns Fashion-MNIST."""
import pytest
import torch

import impls
from bench.data import load_split
from impls.contract import Setup
from impls.models import MODELS, init_params
from impls.models.linreg import TRUE_B, TRUE_W
from tests.conftest import skip_if_unavailable


def epochs_of(model, form, epochs, device="cpu", seed=0):
    spec, split = MODELS[model], load_split(model)
    f = impls.build(model, form, init_params(model, seed), Setup(spec.lr, device))
    X, g = split.features(), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(split), generator=g).split(spec.batch_size):
            f.step(X[idx], split.y[idx])
    return f


@pytest.mark.parametrize("form", list(impls.FORM_MODULES))
def test_linreg_three_epochs_reach_the_noise_floor(form):
    skip_if_unavailable("linreg", form, "cpu")
    f = epochs_of("linreg", form, 3)
    split = load_split("linreg")
    loss = float((((f.predict(split.X).double() - split.y.double()) ** 2) / 2).mean())
    state = f.state()
    assert loss < 1e-4
    assert (state["w"].reshape(-1).double() - torch.tensor(TRUE_W, dtype=torch.float64)).abs().max() < 1e-2
    assert abs(float(state["b"][0]) - TRUE_B) < 1e-2


@pytest.mark.slow
def test_softmax_module_reaches_80_percent_on_real_data(real_data):
    f = epochs_of("softmax", "module", 5)
    test = load_split("softmax", train=False)
    accuracy = float((f.predict(test.features()).argmax(1) == test.y).float().mean())
    assert accuracy > 0.80
