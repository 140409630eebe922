"""asv benchmarks over the runner's grid: thin adapters over ``bench.runner.CellBench`` and ``bench.timer``.

Each class's parameters are axes of ``grid.DEFAULT_GRID`` with the values its cells take; a
combination that is not a cell, or that ``grid.skip_reason`` rules out here (no GPU...), raises
``NotImplementedError`` in ``setup``, which asv records as skipped. ``"cuda"`` is a device value on
every machine, so results line up across machines. Nothing touches CUDA at import time.

Lower is better everywhere (asv flags increases): epochs and loader passes are tracked in seconds.
"""
import bench.timer  # not ``from bench import timer``: asv reads a module-level ``timer`` as its clock
from bench import grid
from bench.cell import CellBench

CELLS = {c.key(): c for c in grid.expand(grid.DEFAULT_GRID)}


def values(axis: str, **where) -> list:
    """The values ``axis`` takes in the grid's cells matching ``where``, in grid order."""
    cells = [c for c in CELLS.values() if all(getattr(c, k) == v for k, v in where.items())]
    found = list(dict.fromkeys(getattr(c, axis) for c in cells))
    return sorted(found) if all(isinstance(v, int) for v in found) else found


def runnable(cell: grid.Cell) -> grid.Cell:
    reason = grid.skip_reason(cell)
    if reason:
        raise NotImplementedError(reason)
    return cell


def cell_or_skip(*axes) -> grid.Cell:
    """The grid's cell with these axis values (in ``grid.AXES`` order), or asv's skip with the reason."""
    if tuple(axes) not in CELLS:
        raise NotImplementedError("not a cell of the default grid")
    return runnable(CELLS[tuple(axes)])


RESIDENT = dict(loader="resident", workers=0)
STEP_PARAMS = [values("model"), values("form", **RESIDENT), values("device"), values("batch_size", **RESIDENT)]


class Step:
    """Steady-state training steps on batches already on the device (CPU: asv's clock; CUDA: CudaStep)."""
    params = STEP_PARAMS
    param_names = ["model", "form", "device", "batch_size"]
    version = "1"
    timeout = 300

    def setup(self, model, form, device, batch_size):
        cell = cell_or_skip(model, form, device, "resident", 0, batch_size)
        if device != "cpu":
            raise NotImplementedError("asv's clock does not synchronize CUDA: see CudaStep.track_step_ms")
        self.bench = CellBench(cell)
        self.bench.warm()
        self.batches = self.bench.device_batches(4)

    def time_step(self, *params):
        self.bench.steps(self.batches)


class CudaStep:
    """One CUDA training step in ms: the suite's synchronized timer (``time_autorange``), median."""
    params = STEP_PARAMS[:2] + [["cuda"]] + STEP_PARAMS[3:]
    param_names = Step.param_names
    version = "1"
    timeout = 300

    def setup(self, model, form, device, batch_size):
        self.bench = CellBench(cell_or_skip(model, form, device, "resident", 0, batch_size))
        self.bench.warm()
        self.batches = self.bench.device_batches()

    def track_step_ms(self, *params):
        stats = bench.timer.time_autorange(lambda: self.bench.steps(self.batches))
        return stats.median / len(self.batches) * 1e3

    track_step_ms.unit = "ms"


class _WarmCell:
    """Set up the grid cell of these axes, warmed (or skip it): shared by the whole-cell benchmarks."""
    param_names = list(grid.AXES)
    version = "1"
    timeout = 900

    def setup(self, *axes):
        self.bench = CellBench(cell_or_skip(*axes))
        self.bench.warm()


class Epoch(_WarmCell):
    """End to end, loader and training, over every cell: epoch seconds (extrapolated past a sample cap)."""
    params = [values(a) for a in grid.AXES]

    def track_epoch_s(self, *axes):
        stats = bench.timer.time_repeats(self.bench.train_pass, 3, self.bench.dev, warmup=0)
        return stats.median * self.bench.total / self.bench.samples

    track_epoch_s.unit = "s"

    def peakmem_epoch(self, *axes):
        self.bench.train_pass()


class Loader:
    """Loader only: one epoch of batches moved to the device, no training (seconds)."""
    params = [values(a) for a in ("model", "device", "loader", "workers", "batch_size")]
    param_names = ["model", "device", "loader", "workers", "batch_size"]
    version = "1"
    timeout = 900

    def setup(self, model, device, loader, workers, batch_size):
        cells = [c for c in CELLS.values()
                 if (c.model, c.device, c.loader, c.workers, c.batch_size) == (model, device, loader, workers, batch_size)]
        if not cells:
            raise NotImplementedError("not a loader of the default grid")
        cell = min(cells, key=lambda c: c.form == "loop")  # a loop cell's pass is capped: avoid it
        self.bench = CellBench(runnable(cell))
        self.bench.loader_pass()  # workers started, data in the page cache
        self.samples = min(self.bench.cap or self.bench.total, self.bench.total)

    def track_loader_epoch_s(self, *params):
        stats = bench.timer.time_repeats(self.bench.loader_pass, 3, self.bench.dev, warmup=0)
        return stats.median * self.bench.total / self.samples

    track_loader_epoch_s.unit = "s"


class Compile:
    """``torch.compile`` seconds of the compiled form's first step (a fresh process: a cold compile)."""
    params = [values("model", form="compiled"), values("device", form="compiled")]
    param_names = ["model", "device"]
    version = "1"
    timeout = 900

    def setup(self, model, device):
        batch_size = grid.BASELINES[model]["batch_size"]
        self.bench = CellBench(cell_or_skip(model, "compiled", device, "resident", 0, batch_size))

    def track_compile_s(self, *params):
        self.bench.warm(1)
        bench.timer.sync(self.bench.dev)
        return self.bench.form.compiled.compile_seconds

    track_compile_s.unit = "s"


class CudaMemory(_WarmCell):
    """Peak CUDA memory allocated over an epoch (the host's peak is ``Epoch.peakmem_epoch``)."""
    params = [values(a) if a != "device" else ["cuda"] for a in grid.AXES]

    def track_cuda_peak_mb(self, *axes):
        import torch

        torch.cuda.reset_peak_memory_stats(self.bench.dev)
        self.bench.train_pass()
        bench.timer.sync(self.bench.dev)
        return torch.cuda.max_memory_allocated(self.bench.dev) / 2**20

    track_cuda_peak_mb.unit = "MiB"
