"""The one timer every tool uses: warm-up, then repeats; CUDA synchronized at block edges.

Two ways, both reported as median, IQR and count:
- :func:`time_repeats` for long blocks (an epoch, a loader pass): ``perf_counter`` around each
  block with a device sync on both edges, after ``warmup`` untimed blocks;
- :func:`time_autorange` for short blocks (a few training steps): ``torch.utils.benchmark.Timer``'s
  ``blocked_autorange`` with the process's thread count (the Timer's default is one thread).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

# torch.utils.benchmark imports torch's extension builder, which warns on a machine without a GPU that it
# finds no CUDA runtime: nothing a timing can act on, so that one import is made quietly.
_log = logging.getLogger("torch.utils.cpp_extension")
_level = _log.level
_log.setLevel(logging.ERROR)
try:
    from torch.utils import benchmark
finally:
    _log.setLevel(_level)

NOISY = 0.10  # IQR/median at or above this flags a measurement as noisy


@dataclass(frozen=True)
class Stats:
    """Seconds per block: median, interquartile range, number of samples."""
    median: float
    iqr: float
    n: int

    @classmethod
    def of(cls, times) -> Stats:
        q1, q2, q3 = np.percentile(np.asarray(times, dtype=float), [25, 50, 75])
        return cls(float(q2), float(q3 - q1), len(times))

    def scaled(self, factor: float) -> Stats:
        """The same measurement in other units (per step, per epoch, ms)."""
        return Stats(self.median * factor, self.iqr * factor, self.n)

    @property
    def noisy(self) -> bool:
        return self.n > 1 and self.iqr >= NOISY * self.median


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_repeats(fn, repeats: int = 3, device="cpu", warmup: int = 1) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then time ``repeats`` calls, syncing before each clock read."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return Stats.of(times)


def time_autorange(fn, min_run_time: float = 0.3, warmup: int = 1) -> Stats:
    """``torch.utils.benchmark.Timer(...).blocked_autorange`` of ``fn`` (it syncs CUDA at block edges)."""
    for _ in range(warmup):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Stats.of(m.times)
