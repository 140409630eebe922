"""The report's signal beside the clock: instructions per step (``linbench counts``, ``counts.csv``).

Counts are taken at one torch thread, whatever thread count the run timed at; a count is joined to
the run's cell of the same model, form, device, loader, workers and batch size, so ``step_ms`` (at the
run's threads) and ``instr_per_step`` (at one) stand side by side.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.grid import AXES, AXIS
from bench.report.render import Section
from bench.runs.run_folder import read_counts

JOIN = [a for a in AXES if a != "threads"]
SHOWN = [*JOIN, "status", "instr_per_step", "instr_per_sample", "instr_spread", "step_ms", "threads", "top_functions",
         "reason"]


def counts_of(run) -> pd.DataFrame | None:
    """The run folder's counts (None without ``counts.csv``)."""
    return read_counts(run.folder)


def with_counts(results: pd.DataFrame, counts: pd.DataFrame | None) -> pd.DataFrame:
    """``results`` with ``instr_per_step`` from ``counts`` where a cell was counted (NaN elsewhere)."""
    if counts is None or counts.empty:
        return results
    counted = counts[counts["status"] == "ok"][[*JOIN, "instr_per_step"]].drop_duplicates(JOIN)
    return results.merge(counted, on=JOIN, how="left")


def _figure(rows: pd.DataFrame, out: Path):
    """Instructions per sample, one bar per counted cell, a panel per model (a linear axis: counts add up)."""
    from bench.report.figures import _save, plt

    models = list(dict.fromkeys(rows["model"]))
    height = 0.8 + 0.32 * rows.groupby("model").size().max()
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), height), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = rows[rows["model"] == model].sort_values("instr_per_sample")
        labels = [f"{r.form} b{r.batch_size}" for r in part.itertuples()]
        ax.barh(labels, part["instr_per_sample"], color="#4c72b0")
        ax.set_title(f"{model}: instructions per sample (one thread)")
        ax.set_xlabel("instructions per sample")
        ax.margins(x=0.15)
        for y, v in enumerate(part["instr_per_sample"]):
            ax.annotate(f"{v:,.0f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "instructions"), None


def instructions(run, out: Path) -> Section | None:
    """The counts section: what they are, the table (with the run's step_ms), a bar chart; None without counts."""
    counts = counts_of(run)
    if counts is None:
        return None
    s = Section("Instructions per step (valgrind)")
    s.text("Instructions executed by one training step, counted by valgrind's callgrind (torch.utils.benchmark's "
           "collect_callgrind) at one torch thread, on batches already in memory, after a warm-up: the same on a "
           "busy machine as on a quiet one (instr_spread: how far two counted blocks of steps differ). Unlike time, "
           "they do not see memory stalls, cache misses or threads; a form that runs fewer instructions does less "
           "work, not necessarily in less time. Under valgrind, vector code runs as AVX2 (valgrind has no AVX-512). "
           "step_ms is the run's own, at its thread count (threads).")
    rows = counts.copy()
    rows["instr_per_sample"] = rows["instr_per_step"] / rows["batch_size"]
    timed = run.results[run.results["status"] == "ok"][[*JOIN, "step_ms", "threads"]].drop_duplicates(JOIN)
    rows = rows.drop(columns=["threads"]).merge(timed, on=JOIN, how="left")
    for c in ("reason", "top_functions"):
        rows[c] = rows[c].astype(object).where(rows[c].notna(), "")
    shown = [c for c in SHOWN if c in rows.columns and (c not in AXIS or AXIS[c].implicit is None
                                                          or rows[c].ne(AXIS[c].implicit).any())]
    s.table("instructions", rows[shown], classes=["" if st == "ok" else "skipped" if st == "skipped" else "fail"
                                                  for st in rows["status"]])
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        s.not_shown("instructions chart: no cell was counted")
    else:
        s.figure(_figure(ok, out), "instructions per sample of each counted cell, per model")
    return s
