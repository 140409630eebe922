"""asv benchmarks over the runner's grid: thin adapters over ``bench.runner.CellBench`` and ``bench.timer``.

Every class takes its parameters from the default grid (``bench.grid``); a combination that is not a
cell of it, or that ``grid.skip_reason`` rules out here (no GPU, a loader without workers...), raises
``NotImplementedError`` in ``setup``, which asv records as skipped. ``"cuda"`` is always a device
value, so the grid is the same on every machine. Nothing touches CUDA at import time.
"""
from bench import grid
from bench.runner import CellBench
import bench.timer  # a module, not its names: asv reads top-level time_* names and `timer` itself

CELLS = {c.key(): c for c in grid.expand(grid.DEFAULT_GRID)}
VALUES = {a: sorted({getattr(c, a) for c in CELLS.values()}, key=str) for a in grid.AXES}


def cell_or_skip(**axes):
    """The grid cell for these axes, or NotImplementedError (asv's skip) with the reason."""
    key = tuple(axes[a] for a in grid.AXES)
    if key not in CELLS:
        raise NotImplementedError("not a cell of the default grid")
    reason = grid.skip_reason(CELLS[key])
    if reason:
        raise NotImplementedError(reason)
    return CELLS[key]


class Step:
    """Steady-state training steps on batches already on the device (resident loader)."""
    params = [VALUES["model"], VALUES["form"], VALUES["device"], VALUES["batch_size"]]
    param_names = ["model", "form", "device", "batch_size"]
    version = "1"
    timeout = 300

    def setup(self, model, form, device, batch_size):
        self.bench = CellBench(cell_or_skip(model=model, form=form, device=device, loader="resident", workers=0,
                                            batch_size=batch_size))
        self.bench.warm()
        self.batches = self.bench.device_batches(4)

    def time_step(self, model, form, device, batch_size):
        if device != "cpu":
            raise NotImplementedError("asv's clock does not synchronize CUDA: see track_step_ms")
        self.bench.steps(self.batches)

    def track_step_ms(self, model, form, device, batch_size):
        """One step, synchronized, median of the suite's own timer."""
        stats = bench.timer.time_repeats(lambda: self.bench.steps(self.batches), repeats=20, device=device)
        return stats.median / len(self.batches) * 1e3

    track_step_ms.unit = "ms"


class Epoch:
    """A whole epoch (or the cell's stated sample cap): end to end and loader only, over the full grid."""
    params = [VALUES[a] for a in grid.AXES]
    param_names = list(grid.AXES)
    version = "1"
    timeout = 600
    repeats = 3

    def setup(self, *axes):
        self.bench = CellBench(cell_or_skip(**dict(zip(grid.AXES, axes))))
        self.bench.warm()

    def track_train_samples_per_s(self, *axes):
        stats = bench.timer.time_repeats(self.bench.train_pass, self.repeats, self.bench.dev, warmup=0)
        return self.bench.samples / stats.median

    track_train_samples_per_s.unit = "samples/s"

    def track_loader_samples_per_s(self, *axes):
        stats = bench.timer.time_repeats(self.bench.loader_pass, self.repeats, self.bench.dev, warmup=0)
        return min(self.bench.cap or self.bench.total, self.bench.total) / stats.median

    track_loader_samples_per_s.unit = "samples/s"

    def peakmem_train_pass(self, *axes):
        self.bench.train_pass()


class Compile:
    """``torch.compile`` time of the compiled form's first step, apart from any steady-state sample."""
    params = [VALUES["model"], VALUES["device"]]
    param_names = ["model", "device"]
    version = "1"
    timeout = 600

    def setup(self, model, device):
        self.cell = cell_or_skip(model=model, form="compiled", device=device, loader="resident", workers=0,
                                 batch_size=grid.BASELINES[model]["batch_size"])

    def track_compile_s(self, model, device):
        import torch._dynamo

        torch._dynamo.reset()  # a cold compile, not the one an earlier benchmark in this process left behind
        from impls import compiled

        compiled._STEPS.clear()
        bench = CellBench(self.cell)
        bench.warm(1)
        bench.timer.sync(device)
        return bench.form.compiled.compile_seconds

    track_compile_s.unit = "s"


class CudaMemory:
    """Peak CUDA memory allocated during an epoch (the host's peak is ``Epoch.peakmem_train_pass``)."""
    params = [VALUES["model"], VALUES["form"], ["cuda"], VALUES["batch_size"]]
    param_names = ["model", "form", "device", "batch_size"]
    version = "1"
    timeout = 300

    def setup(self, model, form, device, batch_size):
        self.bench = CellBench(cell_or_skip(model=model, form=form, device=device, loader="resident", workers=0,
                                            batch_size=batch_size))

    def track_cuda_peak_mb(self, model, form, device, batch_size):
        import torch

        torch.cuda.reset_peak_memory_stats()
        self.bench.train_pass()
        bench.timer.sync(device)
        return torch.cuda.max_memory_allocated() / 2**20

    track_cuda_peak_mb.unit = "MiB"
