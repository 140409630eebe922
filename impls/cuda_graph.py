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

from dataclasses import dataclass, replace

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

    def __init__(self, params: dict[str, torch.Tensor], setup):
        super().__init__(params, setup)
        self.graphs: dict[int, Captured] = {}
        self.epochs: dict[tuple, Captured] = {}

    def captured(self, run):
        """``run(weight, b)`` captured in a graph, after ``warmup`` runs on copies of the parameters on a side
        stream; returns (graph, what the captured run returned)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                run(self.weight.clone(), self.b.clone())
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run(self.weight, self.b)
        return graph, out

    def capture(self, X: torch.Tensor, y: torch.Tensor) -> Captured:
        """The step for batches shaped like ``X``, ``y`` (already on the device, in the op's dtypes), captured."""
        static_X, static_y = X.clone(), y.clone()
        graph, loss = self.captured(lambda weight, b: self.op(weight, b, static_X, static_y, self.lr))
        return Captured(graph, static_X, static_y, loss)

    def train_epoch(self, data) -> torch.Tensor:
        """The whole epoch's gather steps as one graph (captured once per split and batch size), replayed."""
        if self.device.type != "cuda":
            return super().train_epoch(data)  # the ops' CPU reference: nothing to capture
        key = (data.X.data_ptr(), data.y.data_ptr(), len(data.order), data.batch_size, data.divisor)
        if key not in self.epochs:
            order = data.order.clone()
            graph, losses = self.captured(lambda weight, b: self.epoch_steps(weight, b, replace(data, order=order)))
            self.epochs[key] = Captured(graph, order, data.y, losses)  # its "X" is the static order
        captured = self.epochs[key]
        captured.X.copy_(data.order, non_blocking=True)  # the static order the graph's steps read
        captured.graph.replay()
        return captured.loss.clone()

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
