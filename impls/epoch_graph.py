"""A resident epoch captured as one CUDA graph (the PyTorch CUDA Graphs recipe), for a form whose epoch is a
sequence of gather steps (``epoch_steps(weight, b, data)``: each step reads its rows by index from the split on
the device, so no loader kernel runs between steps): the ``cuda_graph`` form's and the ``triton`` form's epochs.

The whole epoch is captured once per split and batch size over a static copy of the epoch's order, after warm-up
runs on a side stream on copies of the parameters (capturing changes nothing, so the form trains exactly as its
uncaptured steps do); an epoch is then one copy of the new order and one ``replay()``. The parameters are updated
in place by the captured kernels, so they keep their addresses, as a graph needs. Off the GPU (the Triton
interpreter on CPU tensors) the steps run as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Captured:
    """A captured graph and its static tensors: the input it reads (a batch, or an epoch's order) and its output."""
    graph: torch.cuda.CUDAGraph
    X: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor


class EpochGraph:
    """Mixed into a form with ``weight``, ``b``, ``device`` and ``epoch_steps``: its resident epochs replayed."""
    warmup = 2  # side-stream runs before a capture (on copies of the parameters)

    def __init__(self, params: dict[str, torch.Tensor], setup):
        super().__init__(params, setup)
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

    def train_epoch(self, data) -> torch.Tensor:
        """The whole epoch's gather steps as one graph (captured once per split and batch size), replayed."""
        if self.device.type != "cuda":
            return self.epoch_steps(self.weight, self.b, data)
        key = (data.X.data_ptr(), data.y.data_ptr(), len(data.order), data.batch_size, data.divisor)
        if key not in self.epochs:
            order = data.order.clone()
            graph, losses = self.captured(lambda weight, b: self.epoch_steps(weight, b, replace(data, order=order)))
            self.epochs[key] = Captured(graph, order, data.y, losses)  # its "X" is the static order
        captured = self.epochs[key]
        captured.X.copy_(data.order, non_blocking=True)  # the static order the graph's steps read
        captured.graph.replay()
        return captured.loss.clone()
