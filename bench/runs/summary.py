"""The terminal's summary of a run: the columns a user reads first, within a terminal's width.

One line per cell that was timed (or failed): its label, samples/s, the epoch's median, the speedup
over the seeds' pipeline with its 95% interval, and its flags (``noisy``, ``disturbed``, the status
when not ok); the cells not timed collapse into one line per reason. ``--wide`` prints every column
instead, as the results file has them.
"""
from __future__ import annotations

import math
import shutil
import textwrap

import pandas as pd

from bench.grid import AXES, label_of
from bench.runs.tables import show

WIDTH = 100
WIDE = ["status", "samples_per_s", "epoch_s", "epoch_s_iqr", "n", "step_ms", "loader_epoch_s", "gflops",
        "roofline_frac", "epoch_roofline_frac", "speedup"]  # after every axis of the grid
SKIPPED = "skipped"


def _speedup(row: dict) -> str:
    value, lo, hi = row.get("speedup"), row.get("speedup_lo"), row.get("speedup_hi")
    if not isinstance(value, float) or math.isnan(value):
        return "-"
    if isinstance(lo, float) and isinstance(hi, float) and not (math.isnan(lo) or math.isnan(hi)):
        return f"{value:.3g}x [{lo:.2g}-{hi:.2g}]"
    return f"{value:.3g}x"


def _flags(row: dict) -> str:
    """At most one word: the status when not ok, else ``EAGER`` (a compiling form that ran no compiled graph),
    ``disturbed`` (others used the CPU) or ``noisy``."""
    if row["status"] != "ok":
        return {"failed-equivalence": "NOT-EQUAL"}.get(row["status"], row["status"].upper())
    return next((name.upper() if name == "eager" else name for name in ("eager", "disturbed", "noisy")
                 if row.get(name) is True), "")


def _machine(frame: pd.DataFrame) -> list[str]:
    """``["machine"]`` where the cells come from several machines (a merged run), else nothing."""
    from bench.report.analysis import machines

    return ["machine"] if machines(frame) else []


def compact(frame: pd.DataFrame, width: int = WIDTH) -> list[str]:
    """The summary's lines: timed cells as a table (with the machine of each where a merged run has several),
    then the cells not timed, one line per reason."""
    rows, machine = frame.to_dict("records"), _machine(frame)
    shown = [dict(cell=label_of(r), **{m: r[m] for m in machine}, samples_s=r["samples_per_s"], epoch_s=r["epoch_s"],
                  speedup=_speedup(r), flags=_flags(r)) for r in rows if r["status"] != SKIPPED]
    columns = ["cell", *machine, "samples_s", "epoch_s", "speedup", "flags"]
    lines = show(shown, columns).splitlines() if shown else []
    skipped = [r for r in rows if r["status"] == SKIPPED]
    if skipped:
        reasons = pd.Series([r["reason"] for r in skipped]).value_counts()
        lines.append(f"{len(skipped)} not timed:")
        for reason, n in reasons.items():
            text = f"  {n}: {reason}"
            lines.append(text if len(text) <= width else text[:width - 1] + "…")
    return [line if len(line) <= width else line[:width - 1] + "…" for line in lines]


def wide(frame: pd.DataFrame) -> list[str]:
    """Every row, every summary column (the former table)."""
    return show(frame.to_dict("records"), [*AXES, *_machine(frame), *WIDE]).splitlines()


def width() -> int:
    """The terminal's columns (``COLUMNS`` where set), at most :data:`WIDTH`."""
    return min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


def wrapped(line: str, columns: int | None = None) -> list[str]:
    """A line of prose within ``columns`` (default: :func:`width`), its continuations indented by two spaces."""
    return textwrap.wrap(line, columns or width(), subsequent_indent="  ", break_on_hyphens=False) or [""]


def short(name: str, width: int = 48) -> str:
    """A name cut to ``width`` characters (a compiled kernel's name lists every op it fused)."""
    return name if len(name) <= width else name[:width - 1] + "…"
