"""Cells of a distributed form (ddp): K ranks of a ``torch.distributed`` group on this machine.

:func:`gang` starts K processes with ``torch.multiprocessing`` (the ``spawn`` start method, gloo for
CPU tensors and NCCL for CUDA ones, a TCP rendezvous on a free local port), each with
``OMP_NUM_THREADS`` and torch's threads set to the cell's ``threads`` (threads per rank), and returns
rank 0's result. Every rank runs the same program on the same seeded batches (SPMD, as ``torchrun``
starts it):

- :func:`time_cell`: the cell timed as :meth:`bench.timing.cell.CellBench.timings` times any cell, every timed
  block started by a barrier and its seconds the slowest rank's (:class:`bench.timing.timer.Collective`);
  then the same steps under DDP's ``no_sync()`` (no gradient allreduce) give the allreduce share of a
  step; the process group's set-up (rendezvous and first barrier) is timed apart, like compile time;
- :func:`check_cases`: the equal-results gate of K ranks (the loss averaged over the ranks).
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from bench.runs import interrupt
from bench.timing import machine_load, timer


class _Ranks(timer.Collective):
    """Every rank starts a timed block together; the slowest rank's seconds and the highest load count."""

    def start(self) -> None:
        dist.barrier()

    def reduce(self, seconds: float, others: float) -> tuple[float, float]:
        t = torch.tensor([seconds, others], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # gloo (CPU tensors) whatever the cell's device
        return float(t[0]), float(t[1])


def join(threads: int, device: str, local_rank: int, tree_root: int, **init) -> float:
    """This process as one rank: its threads, its GPU, its siblings counted as the cell's own work, then
    the process group (``init``: rank and world where no launcher set them); the seconds that took."""
    from impls.ddp import backend

    torch.set_num_threads(threads)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
    machine_load.count_as_mine(tree_root)  # the other ranks are this cell's work, not a disturbance
    start = time.perf_counter()
    dist.init_process_group(backend(), **init)
    dist.barrier()
    return time.perf_counter() - start


def _rank(rank: int, world: int, port: int, threads: int, device: str, parent: int, out: str, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    setup_s = join(threads, device, rank, parent, rank=rank, world_size=world)
    try:
        result = fn(setup_s, *args)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


@contextmanager
def _environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gang(world: int, threads: int, device: str, fn, *args):
    """``fn(setup_s, *args)`` in each of ``world`` new rank processes; rank 0's return value. A rank's
    exception ends them all and is raised here as a RuntimeError with its last line."""
    import torch.multiprocessing as mp

    from impls.ddp import free_port

    with tempfile.TemporaryDirectory(prefix="linbench-ranks-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        try:
            with _environ(OMP_NUM_THREADS=threads):  # read by each rank's OpenMP when torch loads
                mp.start_processes(_rank, args=(world, free_port(), threads, device, os.getpid(), out, fn, args),
                                   nprocs=world, start_method="spawn")
        except mp.ProcessRaisedException as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            raise RuntimeError(f"a rank failed: {lines[-1] if lines else e}") from None
        except mp.ProcessExitedException as e:
            raise RuntimeError(f"a rank ended without a result ({e})") from None
        return torch.load(out, weights_only=False)


# -- timing --------------------------------------------------------------------------------------
def _time(setup_s: float, cell, settings):
    from bench.timing.cell import CellBench

    timer.set_collective(_Ranks())
    bench = CellBench(cell, settings)
    try:
        timed = bench.timings()
        timed.loader = bench.loader_epoch_s()
        with bench.form.net.no_sync():  # the same steps without the gradient allreduce
            alone = bench.step_ms(bench.device_batches())
    finally:
        bench.close()
        timer.set_collective(None)
    world = dist.get_world_size()
    share = max(0.0, 1.0 - alone.median / timed.step.median)
    timed.extra = dict(setup_s=setup_s, allreduce_frac=share,
                       samples_per_s_per_rank=bench.total / timed.e2e.median / world,
                       notes=_notes(cell, world))
    return timed


def _notes(cell, world: int) -> list[str]:
    notes = [f"{world} rank(s) x {cell.threads} thread(s)"]
    cores = os.cpu_count() or 1
    if world * cell.threads > cores:
        notes.append(f"oversubscribed: {world * cell.threads} threads on {cores} cores")
    return notes


def time_cell(cell, settings):
    """A distributed cell timed by its ranks (:class:`bench.timing.cell.Timed`, rank 0's, the slowest rank's
    seconds), with ``setup_s``, ``allreduce_frac`` and ``samples_per_s_per_rank`` in its extra columns."""
    return gang(cell.world_size, cell.threads, cell.device, _time, cell, settings)


# -- the gate ------------------------------------------------------------------------------------
def _global_loss(cls):
    """``cls`` whose step returns the batch-mean loss over every rank (the gate compares it)."""
    class GlobalLoss(cls):
        def step(self, X, y):
            loss = torch.as_tensor(super().step(X, y), dtype=torch.float64).cpu()
            dist.all_reduce(loss)
            return loss / self.world

    return GlobalLoss


def _check(setup_s: float, key, cases):
    import impls
    from bench.gate import check
    from bench.grid import GATED

    values = dict(zip(GATED, key))
    cls = _global_loss(impls.form_class(values["model"], values["form"]))
    results = [check.check_case(key, case, cls) for case in cases]
    for r in results:
        r.case = f"{r.case}, {dist.get_world_size()} ranks"
    return results


def check_cases(key: tuple, cases, worlds) -> list:
    """The gate's cases for a distributed form, run by K ranks for each K of ``worlds``: rank 0's results,
    their case names saying how many ranks ran them (a rank that fails fails the gate)."""
    from bench.gate import check
    from bench.grid import setup_of

    results = []
    for world in worlds:
        try:
            results += gang(world, 1, setup_of(key).device, _check, key, cases)
        except RuntimeError as e:
            interrupt.raise_if_interrupted(e)  # ranks killed by a SIGTERM or Ctrl-C: not the form's failure
            results.append(check.CheckResult(key, "fail", f"{world} ranks: {e}", case=f"{world} ranks"))
    return results
