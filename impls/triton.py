"""The ``triton`` form: d2l ch. 3's whole training step fused into Triton kernels (``@triton.jit``).

The scratch objective of d2l 3.2/3.6 (linreg mean ``(y_hat - y)**2 / 2``, softmax mean stable
cross-entropy) and its SGD update, in fp32, the same design as the ``cuda`` form: linreg in 1 launch
per step, softmax in 2 (logits, softmax, loss and dO per block of rows; then ``W -= lr * X^T dO`` per
block of features, program 0 also updating ``b`` and writing the loss). Matrix products use
``tl.dot`` in IEEE fp32 (no TF32). lr is a device tensor, so nothing syncs.

The wrappers check their arguments as the ``cuda`` form's ops do (:func:`impls.common.check_step_args`)
and launch under the tensors' device. The batch size ``n`` is not specialised on (``do_not_specialize``),
so a ragged last batch does not compile a kernel of its own. On the GPU a class label outside 0..k-1
is not checked on the host (that would sync): it makes its row's loss and gradient, and so the step's loss
and the weights, NaN.

It runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before triton is imported, the same kernels
run on CPU tensors through Triton's interpreter (slow: for checking, not for timing).
"""
from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from impls.common import FusedStepForm, check_step_args, flat
from impls.epoch_graph import EpochGraph

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _interpreter_reads_scalars_with_item() -> None:
    """Make the interpreter's ``tensor.__index__`` use ``.item()``.

    The interpreter holds a scalar argument such as ``n`` in a 1-element array and, before Triton 3.7,
    converted it with ``int(array)`` in ``range(0, n, BLOCK)``: a TypeError from NumPy 2.5 on ("only
    0-dimensional arrays can be converted to Python scalars"). ``.item()`` works for every NumPy.
    """
    from triton.runtime import interpreter

    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or getattr(patch_tensor, "reads_item", False):
        return

    def patched(tensor, *args, **kwargs):
        patch_tensor(tensor, *args, **kwargs)
        tensor.__index__ = lambda self: self.handle.data.item()

    patched.reads_item = True
    interpreter._patch_lang_tensor = patched


if INTERPRET:
    _interpreter_reads_scalars_with_item()


@triton.jit
def _rows(idx_ptr, rows, rmask, N, GATHER: tl.constexpr):
    """The split's rows of a block of the batch's rows, and whether each is a row of the split: ``rows`` themselves,
    or (GATHER) ``idx[rows]``, a bad index read as row 0 and flagged, so its loss and gradient become NaN."""
    if GATHER:
        src = tl.load(idx_ptr + rows, mask=rmask, other=0)
        good = (src >= 0) & (src < N)
        return tl.where(good, src, 0), good
    return rows, rows == rows


@triton.jit
def _scaled(x, divisor, GATHER: tl.constexpr):
    """Pixels as the step path's ToTensor has them: float32, divided by ``divisor`` in IEEE division."""
    x = x.to(tl.float32)
    if GATHER:
        x = tl.math.div_rn(x, divisor)
    return x


@triton.jit(do_not_specialize=["n", "N"])
def _linreg_step(w_ptr, b_ptr, X_ptr, y_ptr, idx_ptr, lr_ptr, loss_ptr, n, d, N, divisor, GATHER: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < d
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    b = tl.load(b_ptr)
    g_w = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    g_b = tl.zeros([BLOCK_N], tl.float32)
    total = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < n
        src, good = _rows(idx_ptr, rows, rmask, N, GATHER)
        x = _scaled(tl.load(X_ptr + src[:, None] * d + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                            other=0.0), divisor, GATHER)
        y = tl.load(y_ptr + src, mask=rmask, other=0.0)
        res = tl.where(rmask, tl.sum(x * w[None, :], axis=1) + b - y, 0.0)
        res = tl.where(good | ~rmask, res, float("nan"))  # a bad index's residual shows in w, b and the loss
        g_w += x * res[:, None]
        g_b += res
        total += res * res / 2
    step = tl.load(lr_ptr) / n
    tl.store(w_ptr + cols, w - step * tl.sum(g_w, axis=0), mask=cmask)
    tl.store(b_ptr, b - step * tl.sum(g_b, axis=0))
    tl.store(loss_ptr, tl.sum(total, axis=0) / n)


@triton.jit(do_not_specialize=["n", "N"])
def _softmax_grad(X_ptr, W_ptr, b_ptr, y_ptr, idx_ptr, dO_ptr, row_loss_ptr, n, d, k, N, divisor,
                  GATHER: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < n
    src, good = _rows(idx_ptr, rows, rmask, N, GATHER)
    cls = tl.arange(0, BLOCK_K)
    kmask = cls < k
    acc = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    for start in range(0, d, BLOCK_D):
        feats = start + tl.arange(0, BLOCK_D)
        fmask = feats < d
        x = _scaled(tl.load(X_ptr + src[:, None] * d + feats[None, :], mask=rmask[:, None] & fmask[None, :],
                            other=0.0), divisor, GATHER)
        w = tl.load(W_ptr + feats[:, None] * k + cls[None, :], mask=fmask[:, None] & kmask[None, :], other=0.0)
        acc = tl.dot(x, w, acc=acc, input_precision="ieee")
    O = tl.where(kmask[None, :], acc + tl.load(b_ptr + cls, mask=kmask, other=0.0)[None, :], float("-inf"))
    top = tl.max(O, axis=1)
    e = tl.exp(O - top[:, None])
    total = tl.sum(e, axis=1)
    y = tl.load(y_ptr + src, mask=rmask, other=0)
    hot = cls[None, :] == y[:, None]
    ok = (y >= 0) & (y < k) & good  # a bad label or index: its row's loss and gradient NaN, shown in W and b
    row_loss = top + tl.log(total) - tl.sum(tl.where(hot, O, 0.0), axis=1)
    tl.store(row_loss_ptr + rows, tl.where(ok, row_loss, float("nan")), mask=rmask)
    dO = (e / total[:, None] - hot.to(tl.float32)) / n
    dO = tl.where(ok[:, None], dO, float("nan"))
    tl.store(dO_ptr + rows[:, None] * k + cls[None, :], dO, mask=rmask[:, None] & kmask[None, :])


@triton.jit(do_not_specialize=["n", "N"])
def _softmax_update(X_ptr, idx_ptr, dO_ptr, row_loss_ptr, W_ptr, b_ptr, lr_ptr, loss_ptr, n, d, k, N, divisor,
                    GATHER: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    feats = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    fmask = feats < d
    cls = tl.arange(0, BLOCK_K)
    kmask = cls < k
    g = tl.zeros([BLOCK_D, BLOCK_K], tl.float32)
    g_b = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    total = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, n, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        rmask = rows < n
        src, good = _rows(idx_ptr, rows, rmask, N, GATHER)
        xt = _scaled(tl.load(X_ptr + src[None, :] * d + feats[:, None], mask=fmask[:, None] & rmask[None, :],
                             other=0.0), divisor, GATHER)
        dO = tl.load(dO_ptr + rows[:, None] * k + cls[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        g = tl.dot(xt, dO, acc=g, input_precision="ieee")
        g_b += dO
        total += tl.load(row_loss_ptr + rows, mask=rmask, other=0.0)
    rate = tl.load(lr_ptr)
    wmask = fmask[:, None] & kmask[None, :]
    W = tl.load(W_ptr + feats[:, None] * k + cls[None, :], mask=wmask)
    tl.store(W_ptr + feats[:, None] * k + cls[None, :], W - rate * g, mask=wmask)
    if pid == 0:  # every program summed dO and the row losses; the first one writes b and the loss
        b = tl.load(b_ptr + cls, mask=kmask)
        tl.store(b_ptr + cls, b - rate * tl.sum(g_b, axis=0), mask=kmask)
        tl.store(loss_ptr, tl.sum(total, axis=0) / n)


def _device_of(X):
    """Launch on X's GPU (a no-op for the interpreter's CPU tensors)."""
    return torch.cuda.device(X.device) if X.is_cuda else contextlib.nullcontext()


def linreg_step(w, b, X, y, lr):
    """Updates ``w`` (d, 1) and ``b`` (1,) in place; returns the batch-mean loss (0-dim)."""
    check_step_args("triton linreg_step", w, b, X, y, lr, torch.float32)
    with _device_of(X):
        return _linreg_launch(w, b, X, y, lr)


def linreg_gather_step(w, b, X, y, idx, divisor, lr):
    """:func:`linreg_step` on rows ``idx`` of the split X (N, d), y (N,), each value divided by ``divisor``."""
    check_step_args("triton linreg_gather_step", w, b, X, y, lr, torch.float32, idx)
    with _device_of(X):
        return _linreg_launch(w, b, X, y, lr, idx, divisor)


def _linreg_launch(w, b, X, y, lr, idx=None, divisor=1.0):
    n, d = (len(idx) if idx is not None else len(X)), X.shape[1]
    loss = X.new_empty((), dtype=torch.float32)
    _linreg_step[(1,)](w, b, X, y, X if idx is None else idx, lr, loss, n, d, len(X), float(divisor),
                       GATHER=idx is not None, BLOCK_N=64, BLOCK_D=triton.next_power_of_2(d))
    return loss


def softmax_step(W, b, X, y, lr):
    """Updates ``W`` (d, k) and ``b`` (k,) in place; returns the batch-mean loss (0-dim)."""
    check_step_args("triton softmax_step", W, b, X, y, lr, torch.int64)
    with _device_of(X):
        return _softmax_launch(W, b, X, y, lr)


def softmax_gather_step(W, b, X, y, idx, divisor, lr):
    """:func:`softmax_step` on rows ``idx`` of the split X (N, d) (uint8 pixels or float32), y (N,), each value
    divided by ``divisor`` in the kernels (on the GPU a bad index, like a bad label, makes the step NaN)."""
    check_step_args("triton softmax_gather_step", W, b, X, y, lr, torch.int64, idx)
    with _device_of(X):
        return _softmax_launch(W, b, X, y, lr, idx, divisor)


def _softmax_launch(W, b, X, y, lr, idx=None, divisor=1.0, BLOCK_M=16, BLOCK_D=32):
    """The two launches of a softmax step (on rows ``idx`` of X when given), with no checks (tests reach the
    kernels' own label and index handling so)."""
    n, d, k = (len(idx) if idx is not None else len(X)), X.shape[1], W.shape[1]
    block_k = max(16, triton.next_power_of_2(k))  # tl.dot needs every dimension >= 16
    dO, row_loss = W.new_empty((n, k)), W.new_empty((n,))
    loss = W.new_empty(())
    rows, gather = (X if idx is None else idx), idx is not None
    _softmax_grad[(triton.cdiv(n, BLOCK_M),)](X, W, b, y, rows, dO, row_loss, n, d, k, len(X), float(divisor),
                                              GATHER=gather, BLOCK_M=BLOCK_M, BLOCK_D=64, BLOCK_K=block_k)
    _softmax_update[(triton.cdiv(d, BLOCK_D),)](X, rows, dO, row_loss, W, b, lr, loss, n, d, k, len(X),
                                                float(divisor), GATHER=gather, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D,
                                                BLOCK_K=block_k)
    return loss


class TritonForm(EpochGraph, FusedStepForm):
    """The ``triton`` form: a model's whole SGD step as the Triton kernels above; on the resident loader's epochs
    (``train_epoch``) the steps that read their rows by index, on the GPU captured as one CUDA graph an epoch."""
    devices = ("cpu", "cuda")  # cpu only through the interpreter (TRITON_INTERPRET=1)
    ops = {"squared": linreg_step, "cross_entropy": softmax_step}
    gather_ops = {"squared": linreg_gather_step, "cross_entropy": softmax_gather_step}

    def epoch_steps(self, weight, b, data) -> torch.Tensor:
        """The epoch's gather steps on ``weight`` and ``b``; each step's loss, stacked."""
        X, y = flat(data.X), data.y.reshape(-1).to(self.label_dtype)
        op = self.gather_ops[self.spec.loss]
        return torch.stack([op(weight, b, X, y, idx, data.divisor, self.lr)
                            for idx in data.order.split(data.batch_size)])

    @classmethod
    def unavailable(cls, device: str) -> str | None:
        if device == "cpu" and not INTERPRET:
            return "triton needs a GPU; set TRITON_INTERPRET=1 to run it on CPU via the interpreter"
        if device == "cuda" and INTERPRET:
            return "TRITON_INTERPRET=1 runs triton on the CPU; unset it to run on the GPU"
        return None


FORM = TritonForm
