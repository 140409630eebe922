"""The fp64 oracle: closed-form gradients in float64, no autograd, no optimizer.

Independent of every form it judges: linreg grad ``X^T (X w + b - y) / n``; softmax grad
``X^T (softmax(O) - onehot(y)) / n`` with a max-shifted softmax. The same algorithm in float32
(``dtype``) tells the gate how far rounding alone carries a case (``bench.check.Case.rounding``).
"""
from __future__ import annotations

import torch

from impls.common import batch_loss, flat


class Oracle:
    devices = ("cpu",)

    def __init__(self, model: str, params: dict[str, torch.Tensor], lr: float, dtype: torch.dtype = torch.float64):
        self.model, self.lr, self.dtype = model, lr, dtype
        self.p = {k: v.detach().to("cpu", dtype).clone() for k, v in params.items()}
        self.weight_name = "w" if model == "linreg" else "W"

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return flat(X).to(self.dtype) @ self.p[self.weight_name] + self.p["b"]

    def step(self, X: torch.Tensor, y: torch.Tensor) -> float:
        Xd = flat(X).to(self.dtype)
        out = Xd @ self.p[self.weight_name] + self.p["b"]
        loss = float(batch_loss(self.model, out, y.to(self.dtype) if self.model == "linreg" else y))
        if self.model == "linreg":
            d_out = out - y.to(self.dtype).reshape(out.shape)
        else:
            d_out = torch.softmax(out, dim=1)
            d_out[torch.arange(len(y)), y] -= 1.0
        d_out /= Xd.shape[0]
        self.p[self.weight_name] -= self.lr * (Xd.T @ d_out)
        self.p["b"] -= self.lr * d_out.sum(0)
        return loss

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.p.items()}
