"""The page's reference sections, at its end: every cell timed or failed, the cells not timed (one row per
reason, every cell in a CSV), and the environment of the run, or of both runs side by side.

Each function returns a :class:`~bench.report.render.Section`; :mod:`bench.report.page` places them.
"""
from __future__ import annotations

import pandas as pd

from bench.grid import AXES, AXIS, label_of
from bench.report.analysis import cross_machine_note, machines
from bench.report.render import Section

# key columns first: the cell, its status, how fast; then the rest, the reason last
SHOWN = [*AXES, "machine", "status", "samples_per_s", "epoch_s", "speedup", "scaling_eff", "samples_per_s_per_rank",
         "allreduce_frac", "setup_s", "epoch_s_iqr", "n", "step_ms",
         "loader_epoch_s", "instr_per_step", "roofline_frac", "epoch_roofline_frac", "gflops", "compile_s",
         "eager", "cuda_peak_mb", "rss_growth_mb", "peak_rss_mb", "reason"]
KEPT = {*(a for a in AXES if AXIS[a].implicit is None), "status", "reason"}  # shown even when empty
NOT_TIMED = [*AXES, "status", "reason"]
FAILED = ("failed-equivalence", "error")


def informative(values: pd.Series) -> bool:
    """A column worth a place: some value, and for an axis with an implicit value, some other value."""
    implicit = AXIS[values.name].implicit if values.name in AXIS else None
    return bool(values.notna().any() and (implicit is None or (values != implicit).any()))


def all_cells(frame: pd.DataFrame) -> Section:
    """Every cell timed or failed, key columns first; a measure no such cell has is left out. The skipped
    cells are the next section's."""
    s = Section("All cells")
    rows = frame[frame["status"] != "skipped"]
    several = machines(frame)
    eager = rows[rows["eager"].eq(True)] if "eager" in rows else rows.iloc[:0]
    columns = [c for c in SHOWN if c in rows.columns and (c in KEPT or informative(rows[c]))
               and (c != "machine" or several) and (c != "eager" or len(eager))]
    s.text("Every cell timed or failed, one row each (the skipped ones: next section). peak_rss_mb is the process's "
           "peak RSS, shared by every cell of the run, not a form's own memory.")
    if several:
        s.text(f"The cells were timed on {len(several)} machines ({', '.join(several)}; column machine), merged "
               "from shard runs (linbench merge).")
    if len(eager):
        which = ", ".join(label_of(r) for r in eager.to_dict("records"))
        s.text(f"{len(eager)} cell(s) of a compiling form ran no compiled graph ({which}; column eager, the reason "
               "says how many steps): their times are of eager code, not of the compiled form.", "warn")
    if note := cross_machine_note(frame):
        s.text(note[0].upper() + note[1:] + ".", "warn")
    if rows.empty:
        s.not_shown("all cells: no cell was timed or failed in this run")
        return s
    s.table("results", rows[columns], classes=["fail" if status in FAILED else "" for status in rows["status"]])
    return s


def _forms(cells: pd.DataFrame) -> str:
    """The cells in few words: ``linreg on cuda: loop, module (6 cells); softmax on cuda: loop (2 cells)``;
    one cell: its label, ``softmax/loop/cuda/resident/w0/b256/t2``."""
    if len(cells) == 1:
        return label_of(cells.iloc[0])
    parts = []
    for (model, device), g in cells.groupby(["model", "device"], sort=False):
        n = len(g)
        parts.append(f"{model} on {device}: {', '.join(dict.fromkeys(g['form']))}"
                     + (f" ({n} cells)" if n > 1 else ""))
    return "; ".join(parts)


def collapsed(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per status and reason: how many cells, the reason, and which (models, devices, forms)."""
    rows = rows.assign(reason=rows["reason"].astype(object).where(rows["reason"].notna(), ""))
    groups = rows.groupby(["status", "reason"], sort=False)
    table = pd.DataFrame([{"cells": len(g), "status": status, "reason": reason, "which": _forms(g)}
                          for (status, reason), g in groups])
    return table.sort_values(["cells"], ascending=False, kind="stable").reset_index(drop=True)


def not_timed(frame: pd.DataFrame) -> Section | None:
    """The cells not timed, one row per reason; every cell of them in ``tables/not_timed.csv``."""
    rows = frame[frame["status"] != "ok"][NOT_TIMED]
    if rows.empty:
        return None
    s = Section("Cells not timed, and why")
    table = collapsed(rows)
    s.text(f"{len(rows)} cells, one row per reason: how many cells, and which models, devices and forms.")
    s.table("not_timed_by_reason", table, classes=["fail" if status in FAILED else "" for status in table["status"]])
    s.data("not_timed", rows, "Every cell not timed, one row each")
    return s


def _machine_text(env: dict) -> str:
    return (f"{env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, {env.get('threads', '?')} torch threads, "
            + (f"GPU {env['gpu']}" if env.get("gpu") else "no GPU") + f", torch {env.get('torch', '?')}")


def _environment_rows(run) -> dict[str, str]:
    peaks = run.meta.get("peaks", {})
    merged = ({"merged from": ", ".join(map(str, run.meta["merged_from"]))} if run.meta.get("merged_from") else {}) | {
        f"machine {host}": _machine_text(env) for host, env in (run.meta.get("machines") or {}).items()
        if isinstance(env, dict) and len(run.meta["machines"]) > 1}
    return (merged | {k: str(v) for k, v in run.meta.get("env", {}).items()}
            | {f"peak {d}": f"{p['gflops']:.0f} GFLOP/s, {p['gbps']:.1f} GB/s" for d, p in peaks.items()}
            | {f"config {k}": str(v) for k, v in run.meta.get("config", {}).items() if k not in ("grid", "overrides")})


def environment(*runs) -> Section:
    """The environment of one run (key, value), or of two side by side (key, A, B, differs): the rows that
    differ marked."""
    s = Section("Environment")
    if len(runs) == 1:
        s.table("environment", pd.DataFrame([{"key": k, "value": v} for k, v in _environment_rows(runs[0]).items()]))
        return s
    a, b = (_environment_rows(r) for r in runs)
    names = [f"A: {runs[0].id}", f"B: {runs[1].id}"]
    if names[0] == names[1]:
        names = ["A", "B"]
    table = pd.DataFrame([{"key": k, names[0]: a.get(k, ""), names[1]: b.get(k, ""),
                           "differs": "yes" if a.get(k) != b.get(k) else ""} for k in dict.fromkeys([*a, *b])])
    s.text(f"Both runs' environments, A ({runs[0].id}) and B ({runs[1].id}); the rows that differ are marked.")
    s.table("environment", table, classes=["differs" if d else "" for d in table["differs"]])
    return s
