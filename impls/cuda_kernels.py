"""The ``cuda`` form: hand-written CUDA C++ kernels (impls/fused_step.cu) fusing d2l ch. 3's whole step.

The scratch objective of d2l 3.2/3.6 (linreg mean ``(y_hat - y)**2 / 2``, softmax mean stable
cross-entropy) and its SGD update, in fp32: linreg in 1 launch per step, softmax in 2 (logits,
softmax, loss and dO per row; then ``W -= lr * X^T dO`` and ``b -= lr * sum(dO)``). The steps are the
custom ops ``linbench::linreg_step`` / ``linbench::softmax_step``: they update the weights in place
and return the loss; lr is a device tensor, so nothing syncs. Each op also has a CPU reference in
plain torch (same semantics) and a fake implementation for torch.compile and ``opcheck``.
The extension is built on first use with ``torch.utils.cpp_extension.load`` and cached in
``LINBENCH_EXTENSIONS_DIR`` (default ``<repo>/.linbench/torch_extensions``).
"""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from impls.common import FusedStepForm

SOURCE = Path(__file__).with_name("fused_step.cu")
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")


def extensions_dir() -> Path:
    default = Path(__file__).resolve().parents[1] / ".linbench" / "torch_extensions"
    return Path(os.environ.get("LINBENCH_EXTENSIONS_DIR") or default)


def toolkit_missing() -> str | None:
    """Why the extension cannot be built here (no nvcc, no ninja), or None."""
    from torch.utils import cpp_extension

    nvcc = Path(cpp_extension.CUDA_HOME or os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    if not nvcc.is_file():
        return f"no nvcc at {nvcc}: set CUDA_HOME to a CUDA toolkit"
    if not cpp_extension.is_ninja_available():
        return "ninja is missing: torch's extension builder needs it (pip install ninja)"
    return None


@cache
def extension():
    """The compiled kernels (built once, then loaded from the cache)."""
    from torch.utils import cpp_extension

    build = extensions_dir() / "linbench_fused_step"
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(name="linbench_fused_step", sources=[str(SOURCE)], build_directory=str(build),
                              extra_cuda_cflags=["-O3"], verbose=False)


@torch.library.custom_op("linbench::linreg_step", mutates_args=("w", "b"), device_types="cpu")
def linreg_step(w: Tensor, b: Tensor, X: Tensor, y: Tensor, lr: Tensor) -> Tensor:
    """One SGD step of linreg; updates ``w`` (d, 1) and ``b`` (1,) in place, returns the mean loss."""
    res = X @ w + b - y.reshape(-1, 1)
    loss = (res * res / 2).mean()
    w -= lr * (X.T @ res) / X.shape[0]
    b -= lr * res.sum(0) / X.shape[0]
    return loss


@torch.library.custom_op("linbench::softmax_step", mutates_args=("W", "b"), device_types="cpu")
def softmax_step(W: Tensor, b: Tensor, X: Tensor, y: Tensor, lr: Tensor) -> Tensor:
    """One SGD step of softmax regression; updates ``W`` (d, k) and ``b`` (k,) in place, returns the mean loss."""
    O = X @ W + b
    loss = (torch.logsumexp(O, dim=1) - O.gather(1, y.reshape(-1, 1)).squeeze(1)).mean()
    dO = torch.softmax(O, dim=1)
    dO[torch.arange(len(y)), y] -= 1.0
    dO /= X.shape[0]
    W -= lr * (X.T @ dO)
    b -= lr * dO.sum(0)
    return loss


@linreg_step.register_kernel("cuda")
def _(w, b, X, y, lr):
    return extension().linreg_step(w, b, X, y, lr)


@softmax_step.register_kernel("cuda")
def _(W, b, X, y, lr):
    return extension().softmax_step(W, b, X, y, lr)


@linreg_step.register_fake
@softmax_step.register_fake
def _(weight, b, X, y, lr):
    return X.new_empty(())


class _CudaForm(FusedStepForm):
    devices = ("cuda",)

    @classmethod
    def unavailable(cls, device: str) -> str | None:
        return toolkit_missing()


class CudaLinReg(_CudaForm):
    weight_name, label_dtype, op = "w", torch.float32, staticmethod(linreg_step)


class CudaSoftmax(_CudaForm):
    weight_name, label_dtype, op = "W", torch.int64, staticmethod(softmax_step)


FORMS = {"linreg": CudaLinReg, "softmax": CudaSoftmax}
