"""The precisions a form can be asked to train in, with the meanings TorchBench gives its ``--precision``.

- ``fp32``: float32 parameters and arithmetic (the default; the cells of every earlier run);
- ``tf32``: float32 parameters, CUDA matmuls on TF32 tensor cores (``torch.backends.cuda.matmul.allow_tf32``);
- ``bf16``: parameters and arithmetic in bfloat16;
- ``amp_bf16``: float32 parameters, the forward and backward under ``torch.autocast(dtype=bfloat16)``;
- ``amp_fp16``: float32 parameters, ``torch.autocast(dtype=float16)`` on CUDA, the loss scaled by a
  ``torch.amp.GradScaler``.

A form says which it runs in ``precisions`` (default ``("fp32",)``); the registry declines the others with
the reason. :func:`tolerance` gives the gate's tolerance of a precision from its own rounding: ``eps`` of
its compute type, widened by the gate to 3x what the oracle's algorithm reaches when it runs in that
precision (``bench.gate.cases.Case.tolerance``), never tuned per form.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from impls.common import Tolerance


@dataclass(frozen=True)
class Precision:
    name: str
    storage: torch.dtype  # the parameters' type
    compute: torch.dtype  # the matmuls' input type (the oracle's, when the gate measures this precision's reach)
    devices: tuple[str, ...]  # where the precision means something
    autocast: torch.dtype | None = None  # torch.autocast's type (amp)
    scaler: bool = False  # the loss scaled by a GradScaler (fp16's narrow range)
    about: str = ""


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", torch.float32, torch.float32, ("cpu", "cuda"), about="float32 throughout"),
    Precision("tf32", torch.float32, torch.float16, ("cuda",),
              about="CUDA matmuls on TF32 tensor cores (10 mantissa bits: the oracle computes in float16, "
                    "which has as many)"),
    Precision("bf16", torch.bfloat16, torch.bfloat16, ("cpu", "cuda"), about="bfloat16 parameters and arithmetic"),
    Precision("amp_bf16", torch.float32, torch.bfloat16, ("cpu", "cuda"), autocast=torch.bfloat16,
              about="float32 parameters, bfloat16 autocast"),
    Precision("amp_fp16", torch.float32, torch.float16, ("cuda",), autocast=torch.float16, scaler=True,
              about="float32 parameters, float16 autocast and a gradient scaler"),
)}
DEFAULT = "fp32"


def of(setup) -> Precision:
    """The precision a form's setup asks for (``fp32`` where it names none)."""
    return PRECISIONS[getattr(setup, "precision", DEFAULT)]


def declined(cls, setup, form: str) -> str | None:
    """Why form class ``cls`` (named ``form``) does not run ``setup``'s precision on its device, or None."""
    p, device = of(setup), torch.device(getattr(setup, "device", "cpu")).type
    if device not in p.devices:
        return f"{p.name} is a {'/'.join(p.devices)} precision ({p.about})"
    written = getattr(cls, "precisions", (DEFAULT,))
    if p.name not in written:
        why = getattr(cls, "precision_note", "")
        return f"{form} has no {p.name} path" + (f" ({why})" if why else "")
    return None


def tolerance(base: Tolerance, setup) -> Tolerance:
    """The gate's tolerance of a form in ``setup``'s precision: the form's own in fp32; else ``eps`` of the
    compute type as rtol and as atol (an ulp at 1: logits, losses and pixels are of order 1, so a logit near 0
    carries the rounding of its terms, not of itself), which the gate widens to 3x the reach of the
    oracle's algorithm run wholly in the compute type (for amp, whose parameters stay float32, a bound from
    above: its updates round too)."""
    p = of(setup)
    if p.name == DEFAULT:
        return base
    eps = torch.finfo(p.compute).eps
    return Tolerance(eps, eps, f"{p.name}: {p.about}; eps of {str(p.compute)[6:]} as rtol and atol", p.compute)


_PLAIN = nullcontext()  # reusable: fp32 and bf16 steps enter nothing, at no cost a step


def computing(setup):
    """The block a form's forward and backward run in: autocast for amp, TF32 matmuls for tf32, nothing
    otherwise."""
    p = of(setup)
    return _PLAIN if p.autocast is None and p.name != "tf32" else _switched(p, setup)


@contextmanager
def _switched(p: Precision, setup):
    device = torch.device(getattr(setup, "device", "cpu")).type
    with ExitStack() as stack:
        if p.name == "tf32":
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", before)
        if p.autocast is not None:
            stack.enter_context(torch.autocast(device, dtype=p.autocast))
        yield
