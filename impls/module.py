"""The ``module`` form: d2l's concise code (3.3 and 3.7), ``nn.Sequential`` + ``nn.Linear`` + ``torch.optim.SGD``.

Losses are the torch ones, scaled to the book's scratch objective: ``nn.MSELoss() / 2`` (MSELoss has
no 1/2, so unscaled its gradient would be twice the scratch one) and ``nn.CrossEntropyLoss()`` (mean).
``nn.Linear`` keeps its weight as (out, in): ``state()`` hands it back as the scratch (in, out) matrix.
"""
from __future__ import annotations

import torch
from torch import nn

from impls.common import FP32


class _ModuleForm:
    devices = ("cpu", "cuda")
    tolerance = FP32

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cpu"):
        weight = params[self.weight_name]
        linear = nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            linear.weight.copy_(weight.T)
            linear.bias.copy_(params["b"])
        self.net = nn.Sequential(nn.Flatten(), linear).to(device)
        self.linear = linear
        self.device = torch.device(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(X.to(self.device))

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = X.to(self.device), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(X), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state(self) -> dict[str, torch.Tensor]:
        return {self.weight_name: self.linear.weight.detach().T.cpu().clone(),
                "b": self.linear.bias.detach().cpu().clone()}


class ModuleLinReg(_ModuleForm):
    weight_name = "w"
    _mse = nn.MSELoss()

    def loss(self, y_hat, y):
        return self._mse(y_hat, y.reshape(y_hat.shape)) / 2


class ModuleSoftmax(_ModuleForm):
    weight_name = "W"
    loss = nn.CrossEntropyLoss()


FORMS = {"linreg": ModuleLinReg, "softmax": ModuleSoftmax}
