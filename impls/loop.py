"""The ``loop`` form: pure Python lists and floats, one example at a time (the seeds' ``cross_loss_1``).

No tensor math inside a step: tensors are turned into lists at the door and back at ``state()``.
It computes in Python floats (fp64), so it is also a second, slow oracle. Softmax is max-shifted
and the loss is ``logsumexp(o) - o[y]``, so logits in the thousands stay finite.
"""
from __future__ import annotations

import math
from operator import mul

import torch

from impls.common import FP64, flat


class _LoopForm:
    devices = ("cpu",)
    tolerance = FP64
    sample_cap = 2560  # about 30 s per softmax epoch: a timed pass covers this many samples, the epoch is extrapolated

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cpu"):
        self.lr = float(lr)
        weight = params[self.weight_name].to(torch.float64)
        self.wt = weight.T.tolist()  # one list of input weights per output
        self.b = params["b"].to(torch.float64).reshape(-1).tolist()

    def _outputs(self, rows):
        return [[sum(map(mul, x, wk)) + bk for wk, bk in zip(self.wt, self.b)] for x in rows]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self._outputs(flat(X).tolist()), dtype=torch.float64)

    def step(self, X: torch.Tensor, y: torch.Tensor) -> float:
        rows = flat(X).tolist()
        outs = self._outputs(rows)
        n = len(rows)
        loss, grads = self._loss_and_output_grads(outs, y.reshape(-1).tolist())
        step = self.lr / n
        for k, wk in enumerate(self.wt):
            gk = [g[k] * step for g in grads]
            for x, g in zip(rows, gk):
                if g:
                    wk[:] = [w - g * xi for w, xi in zip(wk, x)]
            self.b[k] -= sum(gk)
        return loss / n

    def state(self) -> dict[str, torch.Tensor]:
        weight = torch.tensor(self.wt, dtype=torch.float64).T.contiguous()
        return {self.weight_name: weight, "b": torch.tensor(self.b, dtype=torch.float64)}


class LoopLinReg(_LoopForm):
    weight_name = "w"

    def _loss_and_output_grads(self, outs, ys):
        loss, grads = 0.0, []
        for (o,), t in zip(outs, ys):
            loss += (o - t) ** 2 / 2
            grads.append((o - t,))
        return loss, grads


class LoopSoftmax(_LoopForm):
    weight_name = "W"

    def _loss_and_output_grads(self, outs, ys):
        loss, grads = 0.0, []
        for o, t in zip(outs, ys):
            top = max(o)
            exps = [math.exp(v - top) for v in o]
            total = sum(exps)
            loss += top + math.log(total) - o[t]
            probs = [e / total for e in exps]
            probs[t] -= 1.0
            grads.append(probs)
        return loss, grads


FORMS = {"linreg": LoopLinReg, "softmax": LoopSoftmax}
