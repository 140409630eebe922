"""The ``cuda_graph`` form: the ``cuda`` form's fused step (impls/fused_step.cu), captured in a CUDA graph.

At d2l's batch sizes a GPU step is a few microseconds of work behind launch overhead (softmax: 235
steps an epoch, each 2 kernel launches plus the framework's calls). Here each batch size's step is
captured once with ``torch.cuda.CUDAGraph`` (the PyTorch CUDA Graphs recipe: warm-up on a side
stream, then capture) and every step is a copy of the batch into the graph's static inputs and one
``replay()``: the host issues 3 operations a step, whatever the step does. The parameters are updated
in place by the captured kernels, so they keep their addresses, as a graph needs. The warm-up runs
on copies of the parameters: capturing changes nothing, so the form trains exactly as ``cuda`` does.
The loss a step returns is a copy of the graph's static output (the next replay overwrites it).

On the resident loader's epochs (the ``train_epoch`` hook) the whole epoch is captured once: every step of
the ``cuda`` form's gather step over a static copy of the epoch's order, so an epoch is one copy of the new
order and one ``replay()`` (470 kernels for softmax at batch 256, no host call between them).
"""
from __future__ import annotations

import torch

from impls.common import flat
from impls.cuda import CudaForm
from impls.epoch_graph import Captured, EpochGraph


class _Graphed(EpochGraph):
    """Mixed into a ``cuda`` form class: its ``op`` captured per batch size and replayed, and its resident epochs
    (:class:`impls.epoch_graph.EpochGraph`)."""

    def __init__(self, params: dict[str, torch.Tensor], setup):
        super().__init__(params, setup)
        self.graphs: dict[int, Captured] = {}

    def capture(self, X: torch.Tensor, y: torch.Tensor) -> Captured:
        """The step for batches shaped like ``X``, ``y`` (already on the device, in the op's dtypes), captured."""
        static_X, static_y = X.clone(), y.clone()
        graph, loss = self.captured(lambda weight, b: self.op(weight, b, static_X, static_y, self.lr))
        return Captured(graph, static_X, static_y, loss)

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X = flat(X).to(self.device, torch.float32)
        y = y.to(self.device, self.label_dtype).reshape(-1)
        if X.shape[0] not in self.graphs:
            self.graphs[X.shape[0]] = self.capture(X.contiguous(), y.contiguous())
        captured = self.graphs[X.shape[0]]
        captured.X.copy_(X, non_blocking=True)
        captured.y.copy_(y, non_blocking=True)
        captured.graph.replay()
        return captured.loss.clone()


class GraphedForm(_Graphed, CudaForm):
    """The ``cuda_graph`` form: the ``cuda`` form's step captured per batch size and replayed."""


FORM = GraphedForm
