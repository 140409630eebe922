"""The contract of a form, in code: what every form class states and does, and the optional hooks.

A form is a class, its module's ``FORM``, written against a model's spec; the registry binds it to each
model (``cls.spec``, an :class:`impls.models.ModelSpec`). :class:`Form` is the protocol every tool relies
on; :func:`contract_errors` says how a class falls short of it (the registry's tests run it on every form).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar, Protocol, runtime_checkable

import torch

from impls.common import Tolerance


class Setup(SimpleNamespace):
    """What a form is built with besides its parameters: ``lr``, ``device``, ``precision``
    (:mod:`impls.precision`), and the value of every further axis that changes results, by its name (a cell
    makes it from the grid's axis table)."""

    def __init__(self, lr: float, device: str = "cpu", precision: str = "fp32", **axes):
        super().__init__(lr=lr, device=device, precision=precision, **axes)


@dataclass
class EpochData:
    """One epoch of a split resident on the device: batch ``i`` is rows ``order[i*B:(i+1)*B]`` of ``X``
    and ``y`` (the last one ragged), its pixels divided by ``divisor`` (255 for uint8 images, as ``ToTensor``
    scales them; 1 for float rows)."""
    X: torch.Tensor
    y: torch.Tensor
    order: torch.Tensor  # int64, on X's device
    batch_size: int
    divisor: float

    def batches(self):
        """The epoch as (X, y) batches, gathered and scaled as a step form takes them."""
        for idx in self.order.split(self.batch_size):
            X = self.X.index_select(0, idx)
            yield (X.to(torch.float32).div_(self.divisor) if X.dtype == torch.uint8 else X), self.y.index_select(0, idx)


@runtime_checkable
class Form(Protocol):
    """One way of writing a model's SGD training step.

    - ``Form(params, setup)``: ``params`` is a dict of CPU fp64 tensors from the spec's
      :meth:`~impls.models.ModelSpec.init` (named as ``spec.names``: ``w``, ``b``; ``W1``, ``b1``, ...), left
      unchanged; ``setup`` a :class:`Setup` (``lr``, ``device``, ``precision``, ...);
    - :meth:`step`: one minibatch SGD step on the batch given; returns the batch-mean loss (a 0-dim
      tensor or a float) without forcing a device sync;
    - :meth:`predict`: the model's outputs (a regression's ``y_hat``, a classifier's logits);
      :meth:`state`: CPU copies of the parameters, by the spec's names.
    """
    spec: ClassVar[object]  # the model's spec (set by the registry)
    devices: ClassVar[tuple[str, ...]]  # the devices it can run on
    tolerance: ClassVar[Tolerance]  # how far it may drift from the fp64 oracle, and why

    def __init__(self, params: dict[str, torch.Tensor], setup: Setup) -> None: ...
    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor | float: ...
    def predict(self, X: torch.Tensor) -> torch.Tensor: ...
    def state(self) -> dict[str, torch.Tensor]: ...


# Optional hooks, each read by one place of the harness:
HOOKS = {
    "unsupported": "classmethod (spec, setup) -> why the form is not written for that model or setup (on any "
                   "machine), or None",
    "precisions": "tuple of the precisions it runs (impls.precision; default ('fp32',)); precision_note: why not "
                  "others",
    "unavailable": "classmethod (device) -> why it cannot run here (missing compiler, no GPU), or None",
    "compile_log": "method () -> [{'batch_size', 'seconds'}, ...], one per compilation (a form that compiles)",
    "eager_steps": "method () -> steps so far that ran no compiled graph (a form that compiles; dynamo ran them "
                   "eagerly)",
    "sample_cap": "int: samples a timed pass covers, the epoch extrapolated (a form too slow for whole epochs)",
    "distributed": "True: one rank of a torch.distributed group of K (the world_size axis); others run K = 1 only",
    "train_epoch": "method (EpochData) -> the steps' losses (steps,), on the device, unsynced: one "
                   "whole epoch of the resident loader (the split on the device, the epoch's order, its batch "
                   "size), step after step as step() would take them; CellBench times it in place of the "
                   "loader and step() (a form that fuses the gather, or the epoch), the gate checks it too",
}


def contract_errors(cls) -> list[str]:
    """What ``cls`` lacks of :class:`Form` and its hooks ([] when it keeps the contract)."""
    errors = [f"no {name}()" for name in ("step", "predict", "state") if not callable(getattr(cls, name, None))]
    devices = getattr(cls, "devices", None)
    if not (isinstance(devices, tuple) and devices and all(d in ("cpu", "cuda") for d in devices)):
        errors.append(f"devices must be a non-empty tuple of 'cpu'/'cuda', got {devices!r}")
    tolerance = getattr(cls, "tolerance", None)
    if not (isinstance(tolerance, Tolerance) and tolerance.reason):
        errors.append("tolerance must be an impls.common.Tolerance with its reason")
    for hook in ("unavailable", "unsupported"):
        if hasattr(cls, hook) and not callable(getattr(cls, hook)):
            errors.append(f"{hook} must be callable")
    for hook in ("compile_log", "eager_steps", "train_epoch"):
        if hasattr(cls, hook) and not callable(getattr(cls, hook)):
            errors.append(f"{hook} must be a method")
    from impls.precision import PRECISIONS

    if not set(getattr(cls, "precisions", ("fp32",))) <= set(PRECISIONS):
        errors.append(f"precisions must name precisions of {', '.join(PRECISIONS)}")
    cap = getattr(cls, "sample_cap", None)
    if cap is not None and not (isinstance(cap, int) and cap > 0):
        errors.append(f"sample_cap must be a positive int, got {cap!r}")
    if getattr(cls, "distributed", False) is not True and hasattr(cls, "distributed"):
        errors.append("distributed must be True where given")
    return errors
