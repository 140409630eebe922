"""What every form of a model shares: the model specs of d2l chapter 3, seeded inits and data.

Linear regression (d2l 3.2/3.3): ``y_hat = X @ w + b`` with ``squared_loss = (y_hat - y)**2 / 2``.
Softmax regression (d2l 3.6/3.7): ``O = flatten(X) @ W + b``, mean cross-entropy of ``softmax(O)``.
Every form minimises exactly these objectives (batch means), so equal inputs give equal results.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def quiet(logger: str = "torch.utils.cpp_extension"):
    """Only errors from ``logger`` inside the block. torch's extension builder, imported by
    torch.utils.benchmark and used by the cuda form, warns on a machine without a GPU that it finds no
    CUDA runtime: nothing a user can act on here."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True)
class Tolerance:
    """How far a form may drift from the fp64 oracle (elementwise ``|got - want| <= atol + rtol*|want|``)."""
    rtol: float
    atol: float
    reason: str
    dtype: torch.dtype = torch.float32  # the precision the form computes in (the gate scales for its rounding)


FP64 = Tolerance(1e-9, 1e-12, "Python/torch float64: only the order of summation differs from the oracle",
                 torch.float64)
FP32 = Tolerance(1e-4, 1e-5, "float32 storage and accumulation drift over the steps (about 1e-6 seen)")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    lr: float
    batch_size: int
    epochs: int
    n_features: int
    n_outputs: int
    summary: str


MODELS: dict[str, ModelSpec] = {
    "linreg": ModelSpec("linreg", lr=0.03, batch_size=10, epochs=3, n_features=2, n_outputs=1,
                        summary="linear regression on synthetic data (d2l 3.2)"),
    "softmax": ModelSpec("softmax", lr=0.1, batch_size=256, epochs=10, n_features=784, n_outputs=10,
                         summary="softmax regression on Fashion-MNIST (d2l 3.6)"),
}

TRUE_W = (2.0, -3.4)
TRUE_B = 4.2
LINREG_NOISE = 0.01
LINREG_EXAMPLES = 1000


def init_params(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """d2l's init as CPU fp64 tensors: weights ~ N(0, 0.01), bias 0 (``w``,``b`` or ``W``,``b``)."""
    spec = MODELS[model]
    g = torch.Generator().manual_seed(seed)
    weight = torch.normal(0.0, 0.01, size=(spec.n_features, spec.n_outputs), generator=g,
                          dtype=torch.float64)
    bias = torch.zeros(spec.n_outputs if model == "softmax" else 1, dtype=torch.float64)
    return {"w" if model == "linreg" else "W": weight, "b": bias}


def synthetic_linreg(seed: int = 0, n: int = LINREG_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """d2l's ``synthetic_data(true_w, true_b, 1000)``, deterministic from ``seed`` (float32)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.normal(0.0, 1.0, size=(n, len(TRUE_W)), generator=g)
    y = X @ torch.tensor(TRUE_W).reshape(-1, 1) + TRUE_B
    y += torch.normal(0.0, LINREG_NOISE, size=y.shape, generator=g)
    return X, y


def flat(X: torch.Tensor) -> torch.Tensor:
    """Images (n, 1, 28, 28) or rows (n, d) as rows (n, d)."""
    return X.reshape(X.shape[0], -1)


def batch_loss(model: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The objective in fp64-safe torch: mean squared_loss/2 or mean stable cross-entropy."""
    if model == "linreg":
        return ((out - y.reshape(out.shape)) ** 2 / 2).mean()
    return (torch.logsumexp(out, dim=1) - out.gather(1, y.reshape(-1, 1)).squeeze(1)).mean()


def step_cost(model: str, n: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one training step on ``n`` examples: the minimum a roofline counts.

    FLOPs: forward GEMM and weight-gradient GEMM, 2 per multiply-add each (the bias, softmax and
    loss are lower order). Bytes: the batch read once in float32 (X and, for linreg, y).
    """
    spec = MODELS[model]
    flops = 2 * 2 * n * spec.n_features * spec.n_outputs
    bytes_ = 4 * n * (spec.n_features + (1 if model == "linreg" else 0))
    return float(flops), float(bytes_)


class FusedStepForm:
    """The shell of a form whose whole SGD step is one fused op ``op(weight, b, X, y, lr)``.

    The op updates float32 ``weight`` and ``b`` in place and returns the batch-mean loss (0-dim);
    ``lr`` is a 0-dim tensor on the device, so a step never syncs. Subclasses set ``devices``,
    ``weight_name``, ``label_dtype`` and ``op`` (the ``cuda`` and ``triton`` forms).
    """
    tolerance = FP32

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cuda"):
        self.device = torch.device(device)
        self.weight = params[self.weight_name].to(self.device, torch.float32, copy=True).contiguous()
        self.b = params["b"].to(self.device, torch.float32, copy=True).contiguous()
        self.lr = torch.tensor(float(lr), device=self.device)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return flat(X).to(self.device, torch.float32) @ self.weight + self.b

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X = flat(X).to(self.device, torch.float32).contiguous()
        y = y.to(self.device, self.label_dtype).reshape(-1).contiguous()
        return self.op(self.weight, self.b, X, y, self.lr)

    def state(self) -> dict[str, torch.Tensor]:
        return {self.weight_name: self.weight.cpu().clone(), "b": self.b.cpu().clone()}


def check_step_args(op: str, weight, b, X, y, lr, label_dtype: torch.dtype) -> None:
    """Raise a one-line ValueError naming ``op`` unless ``op(weight, b, X, y, lr)`` can run as a fused step.

    The checks of the ``cuda`` form's CPU reference and of the ``triton`` wrappers (fused_step.cu makes the
    same ones). Every tensor is contiguous on X's device; ``X`` (n, d) with n >= 1, ``weight`` (d, k), ``b`` (k,)
    and ``lr`` (one element) are float32; ``y`` (n,) is ``label_dtype`` (float32 targets or int64 class
    labels). Class labels must lie in 0..k-1; that is checked only on the CPU, where it costs no sync.
    """
    def need(ok: bool, why: str) -> None:
        if not ok:
            raise ValueError(f"{op}: {why}")

    w = "W" if label_dtype == torch.int64 else "w"  # the weight's name in the op's signature
    need(X.dim() == 2 and X.shape[0] >= 1, f"X must be (n, d) with n >= 1, got {tuple(X.shape)}")
    for name, t, dtype in ((w, weight, torch.float32), ("b", b, torch.float32), ("X", X, torch.float32),
                           ("y", y, label_dtype), ("lr", lr, torch.float32)):
        need(t.device == X.device, f"{name} is on {t.device} but X is on {X.device}")
        need(t.dtype == dtype, f"{name} must be {dtype}, got {t.dtype}")
        need(t.is_contiguous(), f"{name} must be contiguous")
    n, d = X.shape
    need(weight.dim() == 2 and weight.shape[0] == d, f"{w} must be ({d}, k) for X {tuple(X.shape)}, "
                                                     f"got {tuple(weight.shape)}")
    k = weight.shape[1]
    need(b.shape == (k,), f"b must be ({k},), got {tuple(b.shape)}")
    need(y.shape == (n,), f"y must be ({n},), got {tuple(y.shape)}")
    need(lr.numel() == 1, f"lr must have one element, got {tuple(lr.shape)}")
    if label_dtype == torch.int64 and X.device.type == "cpu":
        lo, hi = (int(v) for v in y.aminmax())
        need(0 <= lo and hi < k, f"labels must be in 0..{k - 1}, got {lo}..{hi}")
