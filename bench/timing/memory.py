"""Memory per cell: what a cell adds to the process, read from Linux's /proc (NaN elsewhere).

The process's peak RSS over a cell (``peak_rss_mb``) is mostly what was there before it (the Python
interpreter, torch and its libraries, the data set: about 0.9 GB on every cell), so it says little of
a form. ``rss_growth_mb`` is the cell's own: the peak RSS during the cell (the kernel's high-water mark
reset at its start) minus the RSS at its start: its loader, its form's tensors, a compiled form's code
and workspace. Memory freed back to the allocator but kept by it is not seen again by a later cell.
"""
from __future__ import annotations

import math
from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def peak_rss_mb() -> float:
    """The process's peak RSS since the last reset, MiB."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """The process's RSS now, MiB."""
    return _status_mb("VmRSS")
