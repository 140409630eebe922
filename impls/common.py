"""What the forms share: tolerances, the fused-step shell and its argument checks, a quiet logger.

The models themselves are specs (:mod:`impls.models`); every form minimises its spec's objective (a batch
mean), so equal inputs give equal results.
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
    dtype: torch.dtype = torch.float32  # the precision the oracle's algorithm runs in to measure rounding's reach


FP64 = Tolerance(1e-9, 1e-12, "Python/torch float64: only the order of summation differs from the oracle",
                 torch.float64)
FP32 = Tolerance(1e-4, 1e-5, "float32 storage and accumulation drift over the steps (about 1e-6 seen)")


def flat(X: torch.Tensor) -> torch.Tensor:
    """Images (n, 1, 28, 28) or rows (n, d) as rows (n, d)."""
    return X.reshape(X.shape[0], -1)


class FusedStepForm:
    """The shell of a form whose whole SGD step is one fused op ``op(weight, b, X, y, lr)``: a model of one
    dense layer, squared loss with one output (linreg's op) or cross-entropy (softmax's op).

    The op updates float32 ``weight`` and ``b`` in place and returns the batch-mean loss (0-dim);
    ``lr`` is a 0-dim tensor on the device, so a step never syncs. Subclasses set ``devices`` and
    ``ops = {loss: op}`` (the ``cuda``, ``cuda_graph``, ``triton`` and ``native`` forms).
    """
    tolerance = FP32
    precision_note = "its kernel does its own float32 arithmetic"
    ops: dict = {}

    @classmethod
    def unsupported(cls, spec, setup=None) -> str | None:
        if len(spec.layers) != 1:
            return (f"its fused kernel is written for one dense layer (linear and softmax regression); "
                    f"{spec.name} has {len(spec.layers)}")
        if spec.loss == "squared" and spec.widths[-1] != 1:
            return f"its fused squared-loss kernel has one output; {spec.name} has {spec.widths[-1]}"
        return None if spec.loss in cls.ops else f"no fused kernel for the {spec.loss} loss"

    def __init__(self, params: dict[str, torch.Tensor], setup):
        self.device = torch.device(setup.device)
        self.weight_name, bias = self.spec.names
        self.label_dtype, self.op = self.spec.label_dtype, self.ops[self.spec.loss]
        self.weight = params[self.weight_name].to(self.device, torch.float32, copy=True).contiguous()
        self.b = params[bias].to(self.device, torch.float32, copy=True).contiguous()
        self.lr = torch.tensor(float(setup.lr), device=self.device)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return flat(X).to(self.device, torch.float32) @ self.weight + self.b

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X = flat(X).to(self.device, torch.float32).contiguous()
        y = y.to(self.device, self.label_dtype).reshape(-1).contiguous()
        return self.op(self.weight, self.b, X, y, self.lr)

    def state(self) -> dict[str, torch.Tensor]:
        return {self.weight_name: self.weight.cpu().clone(), self.spec.names[1]: self.b.cpu().clone()}


def check_step_args(op: str, weight, b, X, y, lr, label_dtype: torch.dtype, idx=None) -> None:
    """Raise a one-line ValueError naming ``op`` unless ``op(weight, b, X, y, lr)`` can run as a fused step.

    The checks of the ``cuda`` form's CPU reference and of the ``triton`` wrappers (fused_step.cu makes the
    same ones). Every tensor is contiguous on X's device; ``X`` (n, d) with n >= 1, ``weight`` (d, k), ``b`` (k,)
    and ``lr`` (one element) are float32; ``y`` (n,) is ``label_dtype`` (float32 targets or int64 class
    labels). Class labels must lie in 0..k-1; that is checked only on the CPU, where it costs no sync.
    With ``idx`` (a gather step: the batch is rows ``idx`` of X), X is (N, d) float32 or uint8, y (N,), and
    ``idx`` (n,) int64 with n >= 1, its values in 0..N-1 (checked on the CPU only).
    """
    def need(ok: bool, why: str) -> None:
        if not ok:
            raise ValueError(f"{op}: {why}")

    w = "W" if label_dtype == torch.int64 else "w"  # the weight's name in the op's signature
    need(X.dim() == 2 and (idx is not None or X.shape[0] >= 1), f"X must be (n, d) with n >= 1, got {tuple(X.shape)}")
    x_types = (torch.float32, torch.uint8) if idx is not None else (torch.float32,)
    for name, t, dtypes in ((w, weight, (torch.float32,)), ("b", b, (torch.float32,)), ("X", X, x_types),
                            ("y", y, (label_dtype,)), ("lr", lr, (torch.float32,)),
                            *([("idx", idx, (torch.int64,))] if idx is not None else [])):
        need(t.device == X.device, f"{name} is on {t.device} but X is on {X.device}")
        need(t.dtype in dtypes, f"{name} must be {' or '.join(map(str, dtypes))}, got {t.dtype}")
        need(t.is_contiguous(), f"{name} must be contiguous")
    n, d = X.shape
    need(weight.dim() == 2 and weight.shape[0] == d, f"{w} must be ({d}, k) for X {tuple(X.shape)}, "
                                                     f"got {tuple(weight.shape)}")
    k = weight.shape[1]
    need(b.shape == (k,), f"b must be ({k},), got {tuple(b.shape)}")
    need(y.shape == (n,), f"y must be ({n},), got {tuple(y.shape)}")
    need(lr.numel() == 1, f"lr must have one element, got {tuple(lr.shape)}")
    if idx is not None:
        need(idx.dim() == 1 and len(idx) >= 1, f"idx must be (n,) with n >= 1, got {tuple(idx.shape)}")
        if X.device.type == "cpu":
            lo, hi = (int(v) for v in idx.aminmax())
            need(0 <= lo and hi < n, f"idx must be in 0..{n - 1}, got {lo}..{hi}")
            y = y.index_select(0, idx)
    if label_dtype == torch.int64 and X.device.type == "cpu":
        lo, hi = (int(v) for v in y.aminmax())
        need(0 <= lo and hi < k, f"labels must be in 0..{k - 1}, got {lo}..{hi}")
