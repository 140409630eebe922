"""pytest-benchmark over the runner's grid: thin adapters over ``bench.timing.cell.CellBench``.

The parameter is the cell's label (a string, so it serialises into the JSON); the id is the label
with ``-`` for ``/`` (``softmax-compiled-cpu-resident-w0-b256-t1``), so ``-k`` selects cells. Warm-up
and compilation happen before the clock. pytest-benchmark owns the clock, so each timed function is
one fixed unit of work, the same as linbench's:

- ``test_step`` (resident cells): ONE training step per call, on batches already on the device. A
  round is one cycle through the cell's ``step_batches`` batches (``iterations``), CUDA synchronized
  after its last step, so the time per call is linbench's ``step_ms`` (whose blocks are that cycle).
- ``test_epoch`` (cells whose pass is a whole epoch): ONE epoch per call, end to end.
- ``test_capped_pass`` (cells with a sample cap, the pure-Python form): ONE capped pass per call, in
  a group of its own, so a pass of ``grid.LOOP_SAMPLE_CAP`` samples is never ranked among epochs.

``extra_info`` holds the cell's axes and the linbench metric in linbench's unit, from the median:
``step_ms`` (ms per step) or ``epoch_s`` (seconds per epoch; a capped pass times ``epoch_scale``,
the epoch's samples over the pass's ``samples``), and ``samples_per_s``. The thread count is in
``machine_info["linbench"]`` (bench/conftest.py): ``--benchmark-compare`` warns when it differs.
"""
import itertools

import pytest

from bench import grid
from bench.timing.cell import CellBench
from bench.timing.timer import sync

# one process each, at one torch thread (``grid.front_end_cells``; LINBENCH_THREADS=1,2 adds 2 threads): a cell
# of several ranks is linbench run's (it starts them); ddp is timed here at one rank
CELLS = {c.label(): c for c in grid.front_end_cells()}


def labels(keep) -> list[str]:
    return [label for label, c in CELLS.items() if keep(c)]


def cell_id(label: str) -> str:
    return label.replace("/", "-")


def capped(cell) -> bool:
    return grid.sample_cap(cell) is not None  # CellBench's default settings


def ready(label, benchmark, kind) -> CellBench:
    cell = CELLS[label]
    reason = grid.skip_reason(cell)
    if reason:
        pytest.skip(f"{label}: {reason}")
    bench = CellBench(cell)
    bench.warm()
    benchmark.group = f"{kind} {cell.model} {cell.device} b{cell.batch_size}"
    benchmark.extra_info.update(cell.as_dict())
    return bench


def median(benchmark):
    """Seconds per call at the median; None under ``--benchmark-disable`` (one untimed call, no stats)."""
    return benchmark.stats.stats.median if benchmark.stats else None


@pytest.mark.parametrize("cell", labels(lambda c: c.loader == "resident"), ids=cell_id)
def test_step(benchmark, cell):
    bench = ready(cell, benchmark, "step")
    batches = bench.device_batches()
    cycle = itertools.cycle(enumerate(batches))

    def step():
        i, (X, y) = next(cycle)
        bench.form.step(X, y)
        if i == len(batches) - 1:
            sync(bench.dev)

    benchmark.pedantic(step, rounds=20, iterations=len(batches), warmup_rounds=1)
    seconds = median(benchmark)
    benchmark.extra_info["step_ms"] = seconds * 1e3 if seconds else None


def record_epoch(benchmark, bench) -> None:
    seconds = median(benchmark)
    epoch = seconds * bench.epoch_scale if seconds else None
    benchmark.extra_info.update(epoch_s=epoch, samples=bench.samples, epoch_scale=bench.epoch_scale,
                                samples_per_s=bench.total / epoch if epoch else None)


def timed_passes(benchmark, bench) -> None:
    def one_pass():
        bench.train_pass()
        sync(bench.dev)

    benchmark.pedantic(one_pass, rounds=bench.settings.repeats, warmup_rounds=0)
    record_epoch(benchmark, bench)


@pytest.mark.parametrize("cell", labels(lambda c: not capped(c)), ids=cell_id)
def test_epoch(benchmark, cell):
    timed_passes(benchmark, ready(cell, benchmark, "epoch"))


@pytest.mark.parametrize("cell", labels(capped), ids=cell_id)
def test_capped_pass(benchmark, cell):
    timed_passes(benchmark, ready(cell, benchmark, "capped pass"))
