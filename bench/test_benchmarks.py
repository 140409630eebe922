"""pytest-benchmark over the runner's grid: one benchmark per cell, thin adapters over ``CellBench``.

``test_step``: steady-state training steps on batches already on the device (resident cells);
``test_epoch``: a whole epoch end to end (or the cell's stated sample cap). Ids name the cell
(``softmax-compiled-cpu-resident-w0-b256``) so ``-k`` selects; groups are model, device and batch.
Warm-up and compilation happen before the measured function; CUDA is synchronized inside it.
"""
import pytest

from bench import grid
from bench.cell import CellBench
from bench.timer import sync

CELLS = grid.expand(grid.DEFAULT_GRID)


def cell_id(cell):
    return cell.label().replace("/", "-")


def ready(cell, benchmark, kind):
    reason = grid.skip_reason(cell)
    if reason:
        pytest.skip(f"{cell.label()}: {reason}")
    bench = CellBench(cell)
    bench.warm()
    benchmark.group = f"{kind} {cell.model} {cell.device} b{cell.batch_size}"
    benchmark.extra_info.update(cell.as_dict())
    return bench


def per_second(benchmark, samples):
    """Samples/s at the median time; None under ``--benchmark-disable`` (one untimed call, no stats)."""
    return samples / benchmark.stats.stats.median if benchmark.stats else None


@pytest.mark.parametrize("cell", [c for c in CELLS if c.loader == "resident"], ids=cell_id)
def test_step(benchmark, cell):
    bench = ready(cell, benchmark, "step")
    batches = bench.device_batches(4)

    def steps():
        bench.steps(batches)
        sync(bench.dev)

    benchmark.pedantic(steps, rounds=20, warmup_rounds=2)
    samples = sum(len(y) for _, y in batches)
    benchmark.extra_info["samples_per_s"] = per_second(benchmark, samples)


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_epoch(benchmark, cell):
    bench = ready(cell, benchmark, "epoch")

    def epoch():
        bench.train_pass()
        sync(bench.dev)

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=0)
    benchmark.extra_info["samples_per_s"] = per_second(benchmark, bench.samples)
    benchmark.extra_info["capped_samples"] = bench.cap
