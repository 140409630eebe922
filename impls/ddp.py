"""The ``ddp`` form: the ``module`` form (d2l 3.3, 3.7 and 4.3) wrapped in
``torch.nn.parallel.DistributedDataParallel``, one replica per rank of a ``torch.distributed`` group
(gloo on CPU, NCCL on CUDA).

Every rank sees the same global batch (the same seeded order) and keeps its contiguous share of it
(``tensor_split``: a view, sizes differing by at most one). Its loss is the sum over its share times
``world / N`` (N the global batch), so DDP's gradient average over the ranks is the gradient of the
global batch mean, and a step equals a single-process step at the same global batch whatever the
shares (an empty share contributes zero). :meth:`step` returns this rank's share of the batch-mean
loss (their mean over the ranks is the batch mean; with one rank it is the batch mean).

Outside a process group (the gate run in-process, asv, pytest-benchmark) the form starts a group of
one rank of its own; ``bench.ranks.distributed`` starts K ranks for the runner.
"""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from impls.common import Tolerance
from impls.module import build_net, loss_fn, net_state

# float32 like the module form; the gradient is summed over ranks, in another order than one process does
DDP_FP32 = Tolerance(1e-4, 1e-5, "float32 drift over the steps, and the gradient averaged over ranks (allreduce) in "
                                 "another summation order")


def free_port() -> int:
    """A TCP port free on this host now (the rendezvous of a local group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA tensors where there is a GPU (one group serves both)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def ensure_group(device: str) -> None:
    """A process group to run in: the one already started (torchrun, bench.ranks.distributed), else one rank here."""
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        dist.init_process_group(backend(), rank=0, world_size=1)


class DDPForm:
    devices = ("cpu", "cuda")
    tolerance = DDP_FP32
    precision_note = "its ranks are written in float32 only"
    distributed = True  # one rank of K: the world_size axis applies

    def __init__(self, params: dict[str, torch.Tensor], setup):
        device, lr = setup.device, setup.lr
        ensure_group(device)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        net, self.linears = build_net(self.spec, params)
        self.net = DistributedDataParallel(net.to(self.device),
                                           device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.loss_sum = loss_fn(self.spec, reduction="sum")
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)

    def shard(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's contiguous share of a global batch."""
        return X.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(y)
        X, y = self.shard(X.to(self.device), y.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_sum(self.net(X), y) * (self.world / n)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.module(X.to(self.device))

    def state(self) -> dict[str, torch.Tensor]:
        return net_state(self.spec, self.linears)


FORM = DDPForm
