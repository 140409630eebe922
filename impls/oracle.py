"""The fp64 oracle: closed-form gradients in float64, no autograd, no optimizer.

Independent of every form it judges: the spec's hand-written backpropagation (:meth:`ModelSpec.grads`:
linreg ``X^T (X w + b - y) / n``, softmax ``X^T (softmax(O) - onehot(y)) / n`` with a max-shifted softmax,
and through ReLU layer by layer for the MLP). The same algorithm in float32 (``dtype``) tells the gate how
far rounding alone carries a case (``bench.gate.cases.Case.rounding``).
"""
from __future__ import annotations

import torch

from impls.common import flat
from impls.models import MODELS


class Oracle:
    devices = ("cpu",)

    def __init__(self, model: str, params: dict[str, torch.Tensor], lr: float, dtype: torch.dtype = torch.float64):
        self.spec, self.lr, self.dtype = MODELS[model], lr, dtype
        self.p = {k: v.detach().to("cpu", dtype).clone() for k, v in params.items()}

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return self.spec.forward(self.p, flat(X).to(self.dtype))[1]

    def step(self, X: torch.Tensor, y: torch.Tensor) -> float:
        loss, grads, _ = self.spec.grads(self.p, flat(X).to(self.dtype), y)
        for name, grad in grads.items():
            self.p[name] -= self.lr * grad
        return float(loss)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.p.items()}
