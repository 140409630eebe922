"""The one timer every tool uses: warm-up, then repeats; CUDA synchronized at block edges; the
machine's load watched around every timed block.

Two ways, both reported as :class:`Stats` (median, IQR, the median's 95% interval, raw samples, load):
- :func:`time_repeats` for long blocks (an epoch, a loader pass): ``perf_counter`` around each
  block with a device sync on both edges, after ``warmup`` untimed blocks, repeated until an
  :class:`Until` rule is met (a count, or the median known to +-3% within a time budget);
- :func:`time_autorange` for short blocks (a few training steps): ``torch.utils.benchmark.Timer``'s
  ``blocked_autorange`` with the process's thread count (the Timer's default is one thread).
A block others disturbed (bench/timing/machine_load.py) is measured again a bounded number of times.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.regress.stats import median_ci, relative_halfwidth
from bench.timing.machine_load import REMEASURES, LoadMeter
from impls.common import quiet

with quiet():  # torch.utils.benchmark imports the extension builder, which warns without a GPU
    from torch.utils import benchmark

NOISY = 0.10  # IQR/median at or above this flags a measurement as noisy
# an Until's seconds count its timed blocks; blocks of microseconds spend more between them (the load meter's
# reads, the interval), so a rule also stops at this many times its seconds of wall time
WALL_PER_SECOND = 2.0


@dataclass(frozen=True)
class Stats:
    """Seconds per block: median, interquartile range, the 95% interval of the median, the raw samples,
    and the machine's load meanwhile (others' mean CPU share; blocks still disturbed after re-measuring)."""
    median: float
    iqr: float
    n: int
    times: tuple = ()
    lo: float = float("nan")
    hi: float = float("nan")
    load: float = 0.0
    disturbed: int = 0

    @classmethod
    def of(cls, times, load: float = 0.0, disturbed: int = 0) -> Stats:
        x = np.asarray(times, dtype=float)
        q1, q2, q3 = np.percentile(x, [25, 50, 75])
        lo, hi = median_ci(x)
        return cls(float(q2), float(q3 - q1), len(x), tuple(float(v) for v in x), lo, hi, load, disturbed)

    def scaled(self, factor: float) -> Stats:
        """The same measurement in other units (per step, per epoch, ms)."""
        return Stats(self.median * factor, self.iqr * factor, self.n, tuple(t * factor for t in self.times),
                     self.lo * factor, self.hi * factor, self.load, self.disturbed)

    @property
    def noisy(self) -> bool:
        return self.n > 1 and self.iqr >= NOISY * self.median

    @property
    def halfwidth(self) -> float:
        """Half the 95% interval of the median, relative to it (0.03: known to +-3%)."""
        return (self.hi - self.lo) / 2 / self.median if self.median > 0 else float("inf")


@dataclass(frozen=True)
class Until:
    """When to stop repeating a block: ``repeats`` at least; then until the median's 95% interval is
    within +-``halfwidth``, or ``seconds`` of timed blocks have passed, or ``most`` repeats. A block others
    disturbed is measured again at most ``remeasures`` times (0: kept as it was, as an A/B slot keeps it)."""
    repeats: int = 3
    halfwidth: float = 0.03
    seconds: float = 2.0
    most: int = 30
    remeasures: int = REMEASURES

    def done(self, times, wall: float = 0.0) -> bool:
        """Whether ``times`` (the timed blocks so far, ``wall`` seconds since the first began) are enough."""
        if len(times) < self.repeats:
            return False
        if len(times) >= self.most or sum(times) >= self.seconds or wall >= WALL_PER_SECOND * self.seconds:
            return True
        return len(times) >= 6 and relative_halfwidth(times) <= self.halfwidth


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Collective:
    """How the ranks of a distributed cell time a block together: ``start()`` (a barrier) before the
    clock starts, ``reduce(seconds, others)`` after it stops, giving every rank the slowest rank's
    seconds and the highest load seen, so every rank takes the same decisions. None: one process."""

    def start(self) -> None: ...
    def reduce(self, seconds: float, others: float) -> tuple[float, float]: ...


_collective: Collective | None = None
_turns = None  # an object whose take() returns when this process may time its next block (linbench ab's pairs)


def set_collective(collective: Collective | None) -> None:
    """Time every block with ``collective`` (bench.ranks.distributed, in each rank), or alone (None)."""
    global _collective
    _collective = collective


def set_turns(turns) -> None:
    """Time every block only when ``turns.take()`` returns (the other side of an A/B pair waits meanwhile), or
    whenever (None)."""
    global _turns
    _turns = turns


def slowest(seconds: float) -> float:
    """``seconds`` as every rank agrees on them (the slowest rank's) under a :class:`Collective`, so a
    decision taken on a time is the same in every rank; alone, ``seconds``."""
    return _collective.reduce(seconds, 0.0)[0] if _collective else seconds


def _timed(fn, device, remeasures: int = REMEASURES) -> tuple[float, LoadMeter]:
    """One block: its seconds (the device synchronized on both edges) and the load meanwhile; a block
    that others disturbed is measured again, at most ``remeasures`` times. Under a :class:`Collective`
    the ranks start together and the slowest one's seconds count."""
    for _ in range(remeasures + 1):
        if _turns:
            _turns.take()
        with LoadMeter() as meter:
            sync(device)
            if _collective:
                _collective.start()
            start = time.perf_counter()
            fn()
            sync(device)
            seconds = time.perf_counter() - start
        if _collective:
            seconds, meter.others = _collective.reduce(seconds, meter.others)
        if not meter.disturbed:
            break
    return seconds, meter


def time_repeats(fn, repeats: int | Until = 3, device="cpu", warmup: int = 1) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then time calls until ``repeats`` (a count, or an
    :class:`Until` rule) is met, syncing before each clock read and watching the machine's load."""
    until = repeats if isinstance(repeats, Until) else Until(repeats, 0.0, float("inf"), repeats)
    for _ in range(warmup):
        fn()
    times, loads, disturbed, start = [], [], 0, time.perf_counter()
    # the elapsed time as every rank agrees on it: each rank's own clock could stop one rank a block before another,
    # which then waits in that block's barrier for ever
    while not until.done(times, slowest(time.perf_counter() - start)):
        seconds, meter = _timed(fn, device, until.remeasures)
        times.append(seconds), loads.append(meter.others)
        disturbed += meter.disturbed
    return Stats.of(times, float(np.mean(loads)), disturbed)


def time_autorange(fn, min_run_time: float = 0.3, warmup: int = 1) -> Stats:
    """``torch.utils.benchmark.Timer(...).blocked_autorange`` of ``fn`` (it syncs CUDA at block edges);
    run again, at most ``REMEASURES`` times, while others disturb it."""
    for _ in range(warmup):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    for _ in range(REMEASURES + 1):
        with LoadMeter() as meter:
            m = timer.blocked_autorange(min_run_time=min_run_time)
        if not meter.disturbed:
            break
    return Stats.of(m.times, meter.others, int(meter.disturbed))
