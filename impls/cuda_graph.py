"""The ``cuda_graph`` form: the ``cuda`` form's fused step (impls/fused_step.cu), captured in a CUDA graph.

At d2l's batch sizes a GPU step is a few microseconds of work behind launch overhead (softmax: 235
steps an epoch, each 2 kernel launches plus the framework's calls). Here each batch size's step is
captured once with ``torch.cuda.CUDAGraph`` (the PyTorch CUDA Graphs recipe: warm-up on a side
stream, then capture) and every step is a copy of the batch into the graph's static inputs and one
``replay()``: the host issues 3 operations a step, whatever the step does. The parameters are updated
in place by the captured kernels, so they keep their addresses, as a graph needs. The warm-up runs
on copies of the parameters: capturing changes nothing, so the form trains exactly as ``cuda`` does.
The loss a step returns is a copy of the graph's static output (the next replay overwrites it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from impls.common import flat
from impls.cuda import CudaForm


@dataclass
class Captured:
    """One batch size's graph and its static tensors: the inputs it reads and the loss it writes."""
    graph: torch.cuda.CUDAGraph
    X: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor


class _Graphed:
    """Mixed into a ``cuda`` form class: its ``op`` captured per batch size and replayed."""
    warmup = 2  # side-stream runs before a capture (on copies of the parameters)

    def __init__(self, params: dict[str, torch.Tensor], lr: float, device: str = "cuda"):
        super().__init__(params, lr, device)
        self.graphs: dict[int, Captured] = {}

    def capture(self, X: torch.Tensor, y: torch.Tensor) -> Captured:
        """The step for batches shaped like ``X``, ``y`` (already on the device, in the op's dtypes), captured."""
        static_X, static_y = X.clone(), y.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.op(self.weight.clone(), self.b.clone(), static_X, static_y, self.lr)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = self.op(self.weight, self.b, static_X, static_y, self.lr)
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
