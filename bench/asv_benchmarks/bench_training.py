"""asv benchmarks over the runner's grid: thin adapters over ``bench.timing.cell.CellBench``.

Every benchmark takes one parameter, ``cell``: a cell of ``grid.DEFAULT_GRID`` by its label, as
linbench prints it (``softmax/module/cpu/torchvision/w4/b256/t1``; every axis of the grid's table is in
it, so results at another thread count, say, are other results and never compared). Cells run at one
torch thread (``grid.front_end_cells``: a core kept busy by another process then holds up no parallel
region of the step); ``LINBENCH_THREADS=1,2`` lists the cells at 2 threads too. Each class lists
its real cells only, so no combination is made up. A cell no machine can run (a device its form does
not have, e.g. ``loop`` on ``cuda``) is not listed; one this machine cannot run (``cuda`` without a GPU,
``triton`` without its compiler) is skipped in ``setup`` with its reason. ``cuda`` cells are listed on
every machine, so results line up across machines.

The same quantities as linbench, in asv's unit ``seconds`` (asv formats them: ``61.2us``):

- ``Step.time_step``: one training step per call on batches already on the CPU, by asv's clock
  (linbench's ``step_ms`` / 1000);
- ``CudaStep.track_step``: one CUDA step, ``CellBench.step_ms`` synchronized (``step_ms`` / 1000);
- ``Epoch.track_epoch_s``: ``CellBench.epoch_s``, extrapolated past a sample cap (``epoch_s``);
- ``Loader.track_loader_epoch_s``: ``CellBench.loader_epoch_s`` (``loader_epoch_s``); the label's
  form reads ``any``, as a loader does not depend on it;
- ``Compile.track_compile_s``: the cold compile of the first compiled cell of each model and
  device, the cell where the runner reports it (``compile_s``).

Instructions in asv's unit ``instructions``: ``Instructions.track_instructions``, a step of each ``Step``
cell counted under valgrind at one thread (``linbench counts``'s ``instr_per_step``): a line per cell
that no load on the machine moves. A count takes one to five minutes; ``asv run -b Instructions``
picks these alone, ``-b 'Step|Epoch'`` the others.

Memory in asv's ``bytes``: ``Epoch.peakmem_epoch`` (the process's peak) and
``CudaMemory.track_cuda_peak``. Lower is better everywhere. Nothing touches CUDA at import time.
"""
import dataclasses
import functools
import itertools

import torch

import impls
from bench import grid
from bench.signals.callgrind import count_one, count_reason, one_thread, valgrind_missing
from bench.timing.cell import CellBench
from bench.timing.timer import sync


def runs_somewhere(cell: grid.Cell) -> bool:
    """False for a cell no machine can run: a device its form does not list."""
    try:
        return cell.device in impls.form_class(cell.model, cell.form).devices
    except ImportError:  # e.g. triton missing here: a reason of this machine, given in setup
        return True


CELLS = [c for c in grid.front_end_cells() if runs_somewhere(c)]  # one process each: the ddp form at one rank
BY_LABEL = {c.label(): c for c in CELLS}


def loader_label(cell: grid.Cell) -> str:
    return dataclasses.replace(cell, form="any").label()


def cell_params(cells) -> list:
    return [list(dict.fromkeys(c.label() for c in cells))]


def ready(label: str) -> grid.Cell:
    """The cell of ``label`` with its process-wide axes applied (e.g. its thread count), or asv's skip
    (``NotImplementedError``) with the reason it cannot run here."""
    cell = BY_LABEL[label]
    reason = grid.skip_reason(cell)
    if reason:
        raise NotImplementedError(reason)
    cell.apply()
    return cell


class _Cells:
    param_names = ["cell"]
    version = "3"
    timeout = 900


class _WarmCell(_Cells):
    """The cell made ready and warmed (or skipped): shared by the whole-cell benchmarks."""

    def setup(self, cell):
        self.bench = CellBench(ready(cell))
        self.bench.warm()


@functools.cache
def one_step(label: str):
    """A warmed cell's one training step, cycling through ``Settings.step_batches`` batches already on
    the device (as ``step_ms`` does). Made once per process: asv (asv_runner >= 0.3) re-runs ``setup``
    before every timed call, and a step's cost does not depend on the state an earlier step left."""
    bench = CellBench(BY_LABEL[label])
    bench.warm()
    batches = itertools.cycle(bench.device_batches())
    return lambda: bench.form.step(*next(batches))


class Step(_Cells):
    """One steady-state training step per call, CPU cells with the resident loader: asv owns the clock.

    CUDA cells are ``CudaStep``: asv's clock does not synchronize the device."""
    params = cell_params(c for c in CELLS if c.loader == "resident" and c.device == "cpu")
    # 4 processes (rounds) of 10-50 samples each: ``asv continuous`` interleaves the two commits' rounds
    # (A B A B ...), so a burst of load on the machine falls on both sides, not on one commit's samples
    rounds = 4
    repeat = (10, 50, 1.0)  # each sample is one call (many calls, asv's ``number``): min, max, seconds
    timeout = 300

    def setup(self, cell):
        self.step = one_step(ready(cell).label())

    def time_step(self, cell):
        self.step()


class Instructions(_Cells):
    """Instructions per training step of the ``Step`` cells, counted at one thread under valgrind
    (``bench.signals.callgrind``); deterministic, so one round is enough."""
    params = cell_params(one_thread(c) for c in CELLS if c.loader == "resident" and c.device == "cpu")
    rounds = 1
    timeout = 900

    def setup(self, cell):
        self.cell = grid.parse_label(cell)
        reason = valgrind_missing() or count_reason(self.cell)
        if reason:
            raise NotImplementedError(reason)
        self.cell.apply()

    def track_instructions(self, cell):
        return count_one(self.cell)["instr_per_step"]

    track_instructions.unit = "instructions"


class CudaStep(_WarmCell):
    """Seconds per CUDA training step: ``CellBench.step_ms`` (blocks of steps, synchronized at the edges)."""
    params = cell_params(c for c in CELLS if c.loader == "resident" and c.device == "cuda")
    timeout = 300

    def track_step(self, cell):
        return self.bench.step_ms().median / 1e3

    track_step.unit = "seconds"


class Epoch(_WarmCell):
    """Seconds per epoch end to end, every cell: ``CellBench.epoch_s`` (extrapolated past a sample cap)."""
    params = cell_params(CELLS)

    def track_epoch_s(self, cell):
        return self.bench.epoch_s().median

    track_epoch_s.unit = "seconds"

    def peakmem_epoch(self, cell):
        self.bench.train_pass()


def loader_cells() -> dict:
    """Each loader of the grid (a label with form ``any``) -> its cells."""
    found = {}
    for cell in CELLS:
        found.setdefault(loader_label(cell), []).append(cell)
    return found


LOADERS = loader_cells()


class Loader(_Cells):
    """Seconds per epoch of a loader alone, batches moved to the device: ``CellBench.loader_epoch_s``."""
    params = [list(LOADERS)]

    def setup(self, cell):
        # the first cell whose form runs here, uncapped if there is one (the whole epoch is timed);
        # when no form runs here, ready() skips with the last one's reason
        for one in sorted(LOADERS[cell], key=lambda c: grid.sample_cap(c) is not None):
            if not grid.skip_reason(one):
                break
        self.bench = CellBench(ready(one.label()))

    def track_loader_epoch_s(self, cell):
        return self.bench.loader_epoch_s().median

    track_loader_epoch_s.unit = "seconds"


def first_compiled() -> list:
    """The first cell of a compiling form (one with ``compile_log``) per (model, device) in grid order: where
    the runner's compile is cold."""
    first = {}
    for c in CELLS:
        if hasattr(impls.form_class(c.model, c.form), "compile_log"):
            first.setdefault((c.model, c.device), c)
    return list(first.values())


class Compile(_Cells):
    """Seconds of ``torch.compile`` in the cell's warm-up; asv runs each in a fresh process: a cold compile."""
    params = cell_params(first_compiled())

    def setup(self, cell):
        self.bench = CellBench(ready(cell))

    def track_compile_s(self, cell):
        before = len(self.bench.form.compile_log())
        self.bench.warm()
        sync(self.bench.dev)
        return sum(e["seconds"] for e in self.bench.form.compile_log()[before:])

    track_compile_s.unit = "seconds"


class CudaMemory(_WarmCell):
    """Peak CUDA memory allocated over an epoch, bytes (the host's peak is ``Epoch.peakmem_epoch``)."""
    params = cell_params(c for c in CELLS if c.device == "cuda")

    def track_cuda_peak(self, cell):
        torch.cuda.reset_peak_memory_stats(self.bench.dev)
        self.bench.train_pass()
        sync(self.bench.dev)
        return torch.cuda.max_memory_allocated(self.bench.dev)

    track_cuda_peak.unit = "bytes"
