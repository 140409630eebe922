"""The ``vectorized`` form: d2l's from-scratch code (3.2, 3.6 and 4.2) on torch tensors with autograd.

``linreg``/``squared_loss``/``sgd``, ``softmax``/``cross_entropy``/``sgd`` and the MLP's ``relu`` + ``net`` as
the book writes them, layer by layer from the spec, except that softmax subtracts the row max and the loss
is taken as a log-softmax, so logits in the thousands give no NaN or inf (the book's naive
``exp(O) / sum`` overflows there).
"""
from __future__ import annotations

import torch

from impls import precision
from impls.common import FP32, flat


def sgd(params, lr, batch_size):
    """d2l's minibatch SGD: ``param -= lr * param.grad / batch_size`` (the loss was summed)."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def relu(X):
    """d2l 4.2's ``relu``: ``max(X, 0)``."""
    return torch.max(X, torch.zeros_like(X))


def log_softmax(O):
    shifted = O - O.max(dim=1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))


def cross_entropy(O, y):
    return -log_softmax(O)[torch.arange(len(y), device=O.device), y]


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape).to(y_hat.dtype)) ** 2 / 2


LOSSES = {"squared": squared_loss, "cross_entropy": cross_entropy}


class VectorizedForm:
    devices = ("cpu", "cuda")
    tolerance = FP32
    precisions = ("fp32", "tf32", "bf16", "amp_bf16")
    precision_note = "amp_fp16 needs a gradient scaler, which the book's sgd() has not; the module form has torch's"

    def __init__(self, params: dict[str, torch.Tensor], setup):
        self.lr, self.device, self.setup = setup.lr, torch.device(setup.device), setup
        self.dtype = precision.of(setup).storage
        self.params = {name: params[name].to(self.device, self.dtype).requires_grad_() for name in self.spec.names}

    def loss(self, O: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example losses, the book's ``squared_loss`` or ``cross_entropy`` as the spec says."""
        return LOSSES[self.spec.loss](O, y)

    def net(self, X: torch.Tensor) -> torch.Tensor:
        H = flat(X).to(self.dtype)
        for i, layer in enumerate(self.spec.layers):
            if i and self.spec.activation == "relu":
                H = relu(H)
            H = H @ self.params[layer.weight] + self.params[layer.bias]
        return H

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), precision.computing(self.setup):
            return self.net(X.to(self.device))

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = X.to(self.device), y.to(self.device)
        with precision.computing(self.setup):
            losses = self.loss(self.net(X), y)
        losses.sum().backward()
        sgd(self.params.values(), self.lr, X.shape[0])
        return losses.detach().mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.params.items()}


FORM = VectorizedForm
