"""The report's data-parallel section: the distributed cells (ddp) against their rank count K, with
scaling efficiency (throughput_K / (K x throughput_1)), the allreduce share of a step and the
process group's set-up time, a table and a figure (throughput against K beside the ideal line).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.grid import AXES
from bench.report.render import Section

COLUMNS = ["model", "form", "device", "loader", "batch_size", "threads", "world_size", "samples_per_s",
           "samples_per_s_per_rank", "scaling_eff", "allreduce_frac", "setup_s", "step_ms"]
GROUP = ["model", "form", "device", "loader", "batch_size", "threads"]


def ranked(ok: pd.DataFrame) -> pd.DataFrame:
    """The timed cells of distributed forms (those with an allreduce share)."""
    if "allreduce_frac" not in ok.columns:
        return ok.iloc[0:0]
    return ok[ok["allreduce_frac"].notna()].sort_values([*GROUP, "world_size"])


def fig_scaling(rows: pd.DataFrame, folder: Path):
    from bench.report.figures import _grid_axes, _save

    groups = [(k, g) for k, g in rows.groupby(GROUP, sort=False) if g["world_size"].nunique() > 1]
    if not groups:
        return None, "scaling against ranks: no distributed cell was timed at two rank counts (--world-sizes 1,2)"
    fig, axes = _grid_axes(len(groups))
    for ax, (key, g) in zip(axes, groups):
        model, form, device, loader, batch, threads = key
        ax.plot(g["world_size"], g["samples_per_s"], marker="o", label=f"{form}, measured")
        one = g[g["world_size"] == 1]["samples_per_s"]
        if len(one):
            ax.plot(g["world_size"], g["world_size"] * one.iloc[0], ls="--", color="gray", label="ideal (K x one rank)")
        for _, r in g.iterrows():
            ax.annotate(f"eff {r['scaling_eff']:.2f}\nallreduce {r['allreduce_frac']:.0%}",
                        (r["world_size"], r["samples_per_s"]), textcoords="offset points", xytext=(6, -18), fontsize=8)
        ax.set(xlabel="ranks (K)", ylabel="throughput (samples/s, all ranks)", xticks=sorted(g["world_size"]),
               title=f"{model} on {device}, {loader}, b{batch} (global), {threads} thread(s) a rank")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, folder, "scaling"), None


def scaling_section(ok: pd.DataFrame, out: Path) -> Section | None:
    rows = ranked(ok)
    if rows.empty:
        return None
    s = Section("Data-parallel scaling")
    s.text("The ddp form: DistributedDataParallel over K processes on this machine (gloo on CPU, NCCL on CUDA), one "
           "global batch per step split over the ranks, so a step equals a single-process step at that batch. "
           "samples_per_s counts all ranks (the slowest rank's epoch); scaling_eff is throughput_K / (K x "
           "throughput_1); allreduce_frac the share of a step that goes away without the gradient allreduce "
           "(DDP's no_sync); setup_s the process group's start (rendezvous and a first barrier), apart like compile "
           "time. threads are per rank.")
    s.text("On a machine of few cores expect an efficiency below 1: the ranks share the cores and the memory "
           "bandwidth that one process had to itself, each allreduce crosses processes (loopback TCP for gloo) "
           "for a model this small, and every rank draws the whole global batch from the loader before keeping its "
           "share.")
    s.table("scaling", rows[[c for c in COLUMNS if c in rows.columns]])
    s.figure(fig_scaling(rows, out), "throughput against the number of ranks, with the ideal line")
    return s


def add_scaling(frame):
    """``scaling_eff`` of each distributed row: its samples/s over K times that of the same cell with one
    rank (same machine where rows name one), throughput_K / (K x throughput_1); NaN without that cell."""
    frame["scaling_eff"] = float("nan")
    ranked = frame[(frame["status"] == "ok") & frame["allreduce_frac"].notna()]
    keys = [a for a in AXES if a != "world_size"] + (["machine"] if "machine" in frame.columns else [])
    one = ranked[ranked["world_size"] == 1].drop_duplicates(keys).set_index(keys)["samples_per_s"].rename("one")
    base = ranked.join(one, on=keys)["one"]
    frame.loc[ranked.index, "scaling_eff"] = ranked["samples_per_s"] / (ranked["world_size"] * base)
    return frame
