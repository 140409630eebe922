"""The ``compiled`` form: ``torch.compile`` of the whole training step (forward, loss, backward, update).

The step is functional: ``torch.func.grad_and_value`` of the scratch objective, then the SGD update,
all in one graph (``fullgraph=True``). The learning rate is a 0-dim tensor and the batch dimension is
marked dynamic, so neither a new lr nor a partial last batch recompiles. One compiled step is shared
by every instance of a (model, device, thread count); any recompile after the first compile raises.
"""
from __future__ import annotations

import time

import torch

from impls.common import FP32, batch_loss, flat


class CompiledStep:
    """A compiled training step that counts its compilations and fails loudly on a recompile."""

    def __init__(self, model: str):
        self.model = model
        self.compiles = 0
        self.compile_seconds = 0.0
        self._fn = torch.compile(self._step, backend=self._backend, fullgraph=True)

    def _backend(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.compiles += 1
        if self.compiles > 1:
            raise RuntimeError(f"compiled {self.model} step recompiled (compile #{self.compiles}): a guard "
                               "failed (input dtype, device or rank, or a global setting changed)")
        return compile_fx(gm, example_inputs)

    def _step(self, weight, b, lr, X, y):
        def objective(params):
            return batch_loss(self.model, X @ params[0] + params[1], y)

        grads, loss = torch.func.grad_and_value(objective)((weight, b))
        return weight - lr * grads[0], b - lr * grads[1], loss

    def __call__(self, weight, b, lr, X, y):
        torch._dynamo.maybe_mark_dynamic(X, 0)
        torch._dynamo.maybe_mark_dynamic(y, 0)
        before, start = self.compiles, time.perf_counter()
        out = self._fn(weight, b, lr, X, y)
        if self.compiles != before:
            self.compile_seconds += time.perf_counter() - start
        return out


_STEPS: dict[tuple[str, str, int], CompiledStep] = {}


class _CompiledForm:
    devices = ("cpu", "cuda")
    tolerance = FP32

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cpu"):
        self.device = torch.device(device)
        self.weight = params[self.weight_name].to(self.device, torch.float32).clone()
        self.b = params["b"].to(self.device, torch.float32).clone()
        self.lr = torch.tensor(float(lr), device=self.device)
        key = (self.model, self.device.type, torch.get_num_threads())  # inductor's CPU code is per thread count
        if key not in _STEPS:
            _STEPS[key] = CompiledStep(self.model)
        self.compiled = _STEPS[key]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return flat(X).to(self.device) @ self.weight + self.b

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = flat(X).to(self.device), y.to(self.device)
        if self.model == "linreg":
            y = y.reshape(-1, 1)
        self.weight, self.b, loss = self.compiled(self.weight, self.b, self.lr, X, y)
        return loss

    def state(self) -> dict[str, torch.Tensor]:
        return {self.weight_name: self.weight.cpu().clone(), "b": self.b.cpu().clone()}


class CompiledLinReg(_CompiledForm):
    model, weight_name = "linreg", "w"


class CompiledSoftmax(_CompiledForm):
    model, weight_name = "softmax", "W"


FORMS = {"linreg": CompiledLinReg, "softmax": CompiledSoftmax}
