"""The ``module`` form: d2l's concise code (3.3, 3.7 and 4.3), ``nn.Sequential`` of ``nn.Linear`` (with
``nn.ReLU`` between for the MLP) + ``torch.optim.SGD``.

Losses are the torch ones, scaled to the book's scratch objective: ``nn.MSELoss() / 2`` (MSELoss has
no 1/2, so unscaled its gradient would be twice the scratch one) and ``nn.CrossEntropyLoss()`` (mean).
``nn.Linear`` keeps its weight as (out, in): ``state()`` hands it back as the scratch (in, out) matrix.
"""
from __future__ import annotations

import torch
from torch import nn

from impls import precision
from impls.common import FP32


def build_net(spec, params: dict[str, torch.Tensor]) -> tuple[nn.Sequential, list[nn.Linear]]:
    """The spec's layers as ``nn.Sequential(Flatten, Linear, [ReLU, Linear]...)`` from ``params``, and its Linears."""
    linears, layers = [], [nn.Flatten()]
    for i, layer in enumerate(spec.layers):
        linear = nn.Linear(layer.inputs, layer.outputs)
        with torch.no_grad():
            linear.weight.copy_(params[layer.weight].T)
            linear.bias.copy_(params[layer.bias])
        if i and spec.activation == "relu":
            layers.append(nn.ReLU())
        layers.append(linear)
        linears.append(linear)
    return nn.Sequential(*layers), linears


def net_state(spec, linears: list[nn.Linear]) -> dict[str, torch.Tensor]:
    """The Linears' parameters under the spec's names, weights as scratch (in, out) matrices, on the CPU."""
    state = {}
    for layer, linear in zip(spec.layers, linears):
        state[layer.weight] = linear.weight.detach().T.cpu().clone()
        state[layer.bias] = linear.bias.detach().cpu().clone()
    return state


def loss_fn(spec, reduction: str = "mean"):
    """The spec's loss in torch.nn: ``MSELoss / 2`` (the scratch objective's scale) or ``CrossEntropyLoss``."""
    if spec.loss == "cross_entropy":
        return nn.CrossEntropyLoss(reduction=reduction)
    mse = nn.MSELoss(reduction=reduction)
    return lambda y_hat, y: mse(y_hat, y.reshape(y_hat.shape).to(y_hat.dtype)) / 2


class ModuleForm:
    devices = ("cpu", "cuda")
    tolerance = FP32
    precisions = ("fp32", "tf32", "bf16", "amp_bf16", "amp_fp16")

    def __init__(self, params: dict[str, torch.Tensor], setup):
        net, self.linears = build_net(self.spec, params)
        self.setup, self.dtype = setup, precision.of(setup).storage
        self.net = net.to(setup.device, self.dtype)
        self.device = torch.device(setup.device)
        self.loss = loss_fn(self.spec)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=setup.lr)
        # amp in float16: the loss scaled so that small gradients do not flush to zero (torch's AMP recipe)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision.of(setup).scaler else None

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), precision.computing(self.setup):
            return self.net(X.to(self.device, self.dtype))

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = X.to(self.device, self.dtype), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with precision.computing(self.setup):
            loss = self.loss(self.net(X), y)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach()

    def state(self) -> dict[str, torch.Tensor]:
        return net_state(self.spec, self.linears)


FORM = ModuleForm
