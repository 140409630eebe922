"""The ``loop`` form: pure Python lists and floats, one example at a time (the seeds' ``cross_loss_1``).

No tensor math inside a step: tensors are turned into lists at the door and back at ``state()``; each
dense layer of the spec is a list of input-weight lists per output, run forward and back one example at
a time (ReLU between layers where the spec has it). It computes in Python floats (fp64), so it is also a
second, slow oracle. Softmax is max-shifted and the loss is ``logsumexp(o) - o[y]``, so logits in the
thousands stay finite.
"""
from __future__ import annotations

import math
from operator import mul

import torch

from impls.common import FP64, flat

# a timed pass covers about this many multiply-adds of the forward pass (about a second a pass), the epoch
# extrapolated: 1280 samples of softmax regression (a larger model: at least one batch)
CAP_WORK = 1280 * 784 * 10


def _squared(o, t):
    return (o[0] - t) ** 2 / 2, [o[0] - t]


def _cross_entropy(o, t):
    top = max(o)
    exps = [math.exp(v - top) for v in o]
    total = sum(exps)
    probs = [e / total for e in exps]
    probs[t] -= 1.0
    return top + math.log(total) - o[t], probs


LOSSES = {"squared": _squared, "cross_entropy": _cross_entropy}


class LoopForm:
    devices = ("cpu",)
    tolerance = FP64
    precision_note = "Python's floats are float64: it has no lower precision to run"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "spec" in vars(cls):  # bound to a model: its cap from the model's size
            work = sum(layer.inputs * layer.outputs for layer in cls.spec.layers)
            cls.sample_cap = min(1280, max(32, CAP_WORK // work))

    def __init__(self, params: dict[str, torch.Tensor], setup):
        self.lr = float(setup.lr)
        self.relu = self.spec.activation == "relu"
        self.loss = LOSSES[self.spec.loss]
        # per layer: one list of input weights per output, and the biases
        self.wt = [params[layer.weight].to(torch.float64).T.tolist() for layer in self.spec.layers]
        self.b = [params[layer.bias].to(torch.float64).reshape(-1).tolist() for layer in self.spec.layers]

    def _forward(self, x):
        """Each layer's input, then the outputs, of one example."""
        inputs = []
        for i, (wt, b) in enumerate(zip(self.wt, self.b)):
            if i and self.relu:
                x = [v if v > 0 else 0.0 for v in x]
            inputs.append(x)
            x = [sum(map(mul, x, wk)) + bk for wk, bk in zip(wt, b)]
        return inputs, x

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self._forward(x)[1] for x in flat(X).tolist()], dtype=torch.float64)

    def step(self, X: torch.Tensor, y: torch.Tensor) -> float:
        rows, ys = flat(X).tolist(), y.reshape(-1).tolist()
        n, total = len(rows), 0.0
        gw = [[[0.0] * len(wk) for wk in wt] for wt in self.wt]
        gb = [[0.0] * len(b) for b in self.b]
        for x, t in zip(rows, ys):
            inputs, out = self._forward(x)
            loss, d = self.loss(out, t)
            total += loss
            for i in reversed(range(len(self.wt))):
                for k, g in enumerate(d):
                    if g:
                        gw[i][k] = [a + g * xi for a, xi in zip(gw[i][k], inputs[i])]
                        gb[i][k] += g
                if i:  # back through the layer's weights, then the ReLU before it
                    d = [sum(g * wk[j] for g, wk in zip(d, self.wt[i]) if g) for j in range(len(inputs[i]))]
                    if self.relu:
                        d = [v if h > 0 else 0.0 for v, h in zip(d, inputs[i])]
        step = self.lr / n
        for wt, b, gwt, gbt in zip(self.wt, self.b, gw, gb):
            for k, wk in enumerate(wt):
                wk[:] = [w - step * g for w, g in zip(wk, gwt[k])]
                b[k] -= step * gbt[k]
        return total / n

    def state(self) -> dict[str, torch.Tensor]:
        state = {}
        for layer, wt, b in zip(self.spec.layers, self.wt, self.b):
            state[layer.weight] = torch.tensor(wt, dtype=torch.float64).T.contiguous()
            state[layer.bias] = torch.tensor(b, dtype=torch.float64)
        return state


FORM = LoopForm
