"""The terminal summary: within 100 columns, the cells not timed one line per reason, ``--wide`` every column."""
import math

import pandas as pd

from bench.runs.run_folder import COLUMNS
from bench.runs.summary import compact, wide


def row(form, status="ok", reason="", **values):
    base = {c: math.nan for c in COLUMNS}
    base.update(model="softmax", form=form, device="cpu", loader="torchvision", workers=4, batch_size=4096, threads=2,
                status=status, reason=reason, samples_per_s=1.23456e6, epoch_s=0.0486, speedup=59.3,
                speedup_lo=58.1, speedup_hi=62.7, noisy=False, disturbed=False)
    base.update(values)
    return base


def test_compact_fits_100_columns_and_collapses_the_cells_not_timed():
    frame = pd.DataFrame([
        row("vectorized"), row("module", disturbed=True, noisy=True), row("compiled", noisy=True),
        row("native", status="failed-equivalence", reason="batch 256: loss off", samples_per_s=math.nan),
        *[row(f"cuda{i}", status="skipped", reason="no CUDA device on this machine") for i in range(14)],
        *[row(f"triton{i}", status="skipped", reason="triton needs a GPU; " + "x" * 120) for i in range(2)],
    ])
    lines = compact(frame)
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert lines[0].split() == ["cell", "samples_s", "epoch_s", "speedup", "flags"]
    assert lines[1].startswith("softmax/vectorized/cpu/torchvision/w4/b4096/t2") and "59.3x [58-63]" in lines[1]
    assert lines[2].rstrip().endswith("disturbed") and lines[3].rstrip().endswith("noisy")
    assert lines[4].rstrip().endswith("NOT-EQUAL")
    assert lines[5:] == ["16 not timed:", "  14: no CUDA device on this machine", lines[7]]
    assert lines[7].startswith("  2: triton needs a GPU; xxx") and lines[7].endswith("…")


def test_wide_keeps_every_row_and_the_roofline_columns():
    frame = pd.DataFrame([row("vectorized"), row("cuda", status="skipped", reason="no CUDA device")])
    lines = wide(frame)
    assert len(lines) == 3 and "roofline_frac" in lines[0] and "skipped" in lines[2]
