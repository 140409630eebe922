"""A cell's results row from its timings: throughput, the step and loader times with their intervals, load,
memory, compile time, and the roofline reading against the peaks probed in the run."""
from __future__ import annotations

import math

import torch

from bench.runs.meta import roofline_s
from bench.runs.status import Status
from bench.runs.store import empty_row
from impls.models import train_examples
from impls.precision import PRECISIONS


def timed_row(cell, timed, compiles: list | None, cap, peaks: dict) -> tuple[dict, dict]:
    """A results row and the raw samples from a cell's timings (``compiles``: those during the cell; ``peaks``:
    its device's, probed in the run)."""
    e2e, step, load, samples = timed.e2e, timed.step, timed.loader, timed.samples
    step_s = step.median / 1e3
    spec, total = cell.spec, train_examples(cell.spec)
    flops, bytes_ = spec.cost(timed.batch, PRECISIONS[cell.precision].storage.itemsize)
    roofline_epoch = roofline_s(spec, total, peaks, cell.precision)
    roofline_step = roofline_s(spec, timed.batch, peaks, cell.precision)
    notes = list(timed.extra.pop("notes", []))
    if compiles:
        notes.append(f"compiled {len(compiles)} time(s) during the cell, at batch size(s) "
                     + ", ".join(str(e["batch_size"]) for e in compiles))
    if cap:
        notes.append(f"capped at {samples} samples per pass; epoch_s extrapolated")
    if e2e.noisy or step.noisy:
        notes.append("noisy (IQR >= 10% of median)")
    disturbed = sum(s.disturbed for s in (e2e, step, load))
    others = max(s.load for s in (e2e, step, load))
    if disturbed:
        notes.append(f"disturbed: others used up to {others:.0%} of the CPU in {disturbed} timed block(s), "
                     "re-measured and still busy")
    row = empty_row(
        {"threads": torch.get_num_threads(), **cell.as_dict()}, Status.OK, "; ".join(notes), samples=samples,
        samples_per_s=total / e2e.median, epoch_s=e2e.median, epoch_s_lo=e2e.lo, epoch_s_hi=e2e.hi,
        epoch_s_iqr=e2e.iqr, n=e2e.n,
        noisy=e2e.noisy or step.noisy, step_ms=step.median, step_ms_lo=step.lo, step_ms_hi=step.hi,
        step_ms_iqr=step.iqr, step_n=step.n,
        loader_epoch_s=load.median, loader_epoch_s_iqr=load.iqr, loader_n=load.n,
        load=others, disturbed=bool(disturbed),
        compile_s=sum(e["seconds"] for e in compiles) if compiles is not None else math.nan,
        peak_rss_mb=timed.peak_rss_mb, rss_growth_mb=timed.rss_growth_mb, cuda_peak_mb=timed.cuda_peak_mb,
        gflops=flops / step_s / 1e9, gbps=bytes_ / step_s / 1e9,
        roofline_frac=roofline_step / step_s, epoch_roofline_frac=roofline_epoch / e2e.median, **timed.extra,
    )
    return row, {"epoch": e2e.times, "step": tuple(t / 1e3 for t in step.times), "loader_epoch": load.times}
