"""The ``vectorized`` form: d2l's from-scratch code (3.2 and 3.6) on torch tensors with autograd.

``linreg``/``squared_loss``/``sgd`` and ``softmax``/``cross_entropy``/``sgd`` as the book writes them,
except that softmax subtracts the row max and the loss is taken as a log-softmax, so logits in the
thousands give no NaN or inf (the book's naive ``exp(O) / sum`` overflows there).
"""
from __future__ import annotations

import torch

from impls.common import FP32, flat


def sgd(params, lr, batch_size):
    """d2l's minibatch SGD: ``param -= lr * param.grad / batch_size`` (the loss was summed)."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def log_softmax(O):
    shifted = O - O.max(dim=1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def cross_entropy(O, y):
    return -log_softmax(O)[torch.arange(len(y), device=O.device), y]


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


class _VectorizedForm:
    devices = ("cpu", "cuda")
    tolerance = FP32

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cpu"):
        self.lr, self.device = lr, torch.device(device)
        self.weight = params[self.weight_name].to(self.device, torch.float32).requires_grad_()
        self.b = params["b"].to(self.device, torch.float32).requires_grad_()

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return flat(X).to(self.device) @ self.weight + self.b

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = flat(X).to(self.device), y.to(self.device)
        losses = self.loss(flat(X) @ self.weight + self.b, y)
        losses.sum().backward()
        sgd([self.weight, self.b], self.lr, X.shape[0])
        return losses.detach().mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {self.weight_name: self.weight.detach().cpu().clone(), "b": self.b.detach().cpu().clone()}


class VectorizedLinReg(_VectorizedForm):
    weight_name = "w"
    loss = staticmethod(squared_loss)


class VectorizedSoftmax(_VectorizedForm):
    weight_name = "W"
    loss = staticmethod(cross_entropy)


FORMS = {"linreg": VectorizedLinReg, "softmax": VectorizedSoftmax}
