"""The machine's load around a timed block: how much of its CPU others used meanwhile.

:class:`LoadMeter` reads the system's CPU time and this process tree's (the process and its children,
e.g. DataLoader workers) before and after a block: others' share is the CPU time the system spent busy
(steal included) beyond this tree's, over the block's wall time times the cores. A block with others'
share above :data:`DISTURBED` is disturbed: the timer measures it again, a bounded number of times.
"""
from __future__ import annotations

import os
import time

import psutil

DISTURBED = 0.25  # others' share of the machine's CPU above which a block is re-measured (2 cores: half a core)
REMEASURES = 2  # extra tries of a disturbed block before it is kept and the cell marked disturbed


def _tree_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of this process and each living descendant, by pid."""
    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:  # a worker that ended meanwhile
            pass
    return out


def _busy(t) -> float:
    """System-wide CPU seconds not idle (iowait counts as idle), steal included."""
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


_TREE_ROOT: int | None = None  # the process whose tree is "mine" (default: this one)


def count_as_mine(pid: int) -> None:
    """Count ``pid``'s whole process tree as this process's own work (the ranks of a distributed cell
    share their parent's tree: one rank is not a disturbance of another)."""
    global _TREE_ROOT
    _TREE_ROOT = pid


class LoadMeter:
    """``with LoadMeter() as m: ...`` then ``m.others`` (0..1) and ``m.disturbed``."""

    def __init__(self):
        self.proc = psutil.Process(_TREE_ROOT or os.getpid())
        self.others = 0.0

    def __enter__(self) -> LoadMeter:
        self._sys, self._tree, self._t = psutil.cpu_times(), _tree_cpu(self.proc), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t
        sys_busy = _busy(psutil.cpu_times()) - _busy(self._sys)
        end = _tree_cpu(self.proc)
        mine = sum(v - self._tree.get(pid, 0.0) for pid, v in end.items())
        capacity = wall * (psutil.cpu_count() or 1)
        self.others = min(1.0, max(0.0, (sys_busy - mine) / capacity)) if capacity > 0 else 0.0

    @property
    def disturbed(self) -> bool:
        return self.others > DISTURBED


def machine_load(seconds: float = 0.5) -> dict:
    """Others' share of the CPU over ``seconds`` (this process idle meanwhile), the load average and cores."""
    with LoadMeter() as m:
        time.sleep(seconds)
    return {"others": round(m.others, 3), "loadavg": round(os.getloadavg()[0], 2), "cores": psutil.cpu_count()}
