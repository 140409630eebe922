"""The report's section "Why not at the roofline": the profiles ``linbench profile --run`` wrote into the run.

For each model, form and device, the profiled cell whose step handles the most samples per second: its
step time and that time's multiple of the roofline time, the share of the step outside any operator
(Python and framework overhead; defined in :mod:`bench.signals.profile`), the top operators and their shares,
and one sentence read from those numbers; then a stacked bar per cell, its step split into the top
operators, the other operators and the time outside any operator.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.grid import AXES, gate_key
from bench.report.render import Section
from bench.runs.run_folder import PROFILES, read_profiles
from bench.runs.summary import short

# the BLAS calls (in place too: the native form's update); not matmul, a composite of these
GEMM = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"}
SHOWN = ["cell", "step_us", "step_us_profiled", "roofline_us", "x_roofline", "operators_pct", "outside_pct",
         "python_pct", "gpu_busy_pct", "loader_pct_of_epoch", "top_operators"]
NAMED = 8  # operators named in the chart; the rest are "other operators"


def _operators(ops: pd.DataFrame, device: str) -> pd.DataFrame:
    """The operator rows, by their share of the step: self CPU time, or on CUDA their kernels' time."""
    share = "device_share" if device == "cuda" else "self_cpu_share"
    rows = ops[ops["kind"] == "operator"].assign(share=lambda f: f[share].fillna(0.0))
    return rows.sort_values("share", ascending=False, ignore_index=True)


def reading(s: dict, ops: pd.DataFrame, loader_share: float = math.nan) -> str:
    """One sentence on why the step is where it is, from the profile's numbers (and the loader's share of
    the run's epoch, when the run timed the cell)."""
    operators = _operators(ops, s["device"])
    gemm = operators[operators["op"].isin(GEMM)]
    top = operators.iloc[0] if len(operators) else None
    per_call = s["outside_us"] / s["operator_calls"] if s["operator_calls"] else math.nan
    if s["device"] == "cuda" and s["device_busy_share"] < 0.5:
        text = (f"the GPU is busy only {s['device_busy_share']:.0%} of the step: launch-bound, the CPU's per-op "
                "overhead sets the pace; fusing the step or replaying it as a CUDA graph would help")
    elif s["operators_share"] < 0.05:
        text = (f"the step is Python itself: {s['outside_share']:.0%} of it outside any tensor operator; vectorizing "
                "it (whole-batch tensor operators) would help most")
    elif s["outside_share"] >= 0.5:
        text = (f"most of the step ({s['outside_share']:.0%}) is outside operators: per-op overhead dominates "
                f"({s['operator_calls']:.0f} operator calls a step, {per_call:.1f} us of Python and framework time "
                "per call); fusing the step (fewer, larger operators) would help")
    elif gemm["share"].sum() >= 0.5:
        names = "/".join(n.removeprefix("aten::") for n in gemm["op"].head(2))
        text = f"most time in {names} ({gemm['share'].sum():.0%} of the step): compute-bound in BLAS"
        if s["x_roofline"] >= 3:
            text += (f", yet {s['x_roofline']:.0f}x the roofline time: these small, skinny GEMMs run far below the "
                     "probed peak")
    elif top is not None:
        text = (f"the operators take {s['operators_share']:.0%} of the step, spread out ({short(top['op'], 40)} "
                f"the largest at {top['share']:.0%}): many small operators; fusing them would help")
    else:
        text = "no operator time recorded"
    if 0.3 <= s["outside_share"] < 0.5 and s["operators_share"] >= 0.05:
        text += f"; still, {s['outside_share']:.0%} of the step is outside operators"
    if loader_share >= 0.5:
        text += (f"; end to end, though, the loader takes {loader_share:.0%} of the epoch: the loader, not the "
                 "step, bounds training")
    return text


def _loader_shares(run, summaries: list[dict]) -> list[float]:
    """The loader's share of the epoch (loader_epoch_s / epoch_s) of each profiled cell the run timed (NaN for a
    form that trains whole epochs: its epoch runs no loader pass)."""
    ok = run.results[run.results["status"] == "ok"]
    index = {tuple(str(r[a]) for a in AXES): r for r in ok.to_dict("records")}
    shares = []
    for s in summaries:
        row = index.get(tuple(str(s[a]) for a in AXES))
        whole = row and str(row.get("whole_epoch")) == "True"  # the form's own epoch: no loader pass in it
        shares.append(row["loader_epoch_s"] / row["epoch_s"] if row and row["epoch_s"] > 0 and not whole else math.nan)
    return shares


def _best(profiles: list[dict]) -> list[dict]:
    """Per model, form and device, the profile whose step handles the most samples per second."""
    best: dict[tuple, dict] = {}
    for p in profiles:
        s = p["summary"]
        key, rate = gate_key(s), s["batch"] / s["step_plain_us"]
        if key not in best or rate > best[key]["summary"]["batch"] / best[key]["summary"]["step_plain_us"]:
            best[key] = p
    return list(best.values())


def _row(p: dict, loader_share: float) -> dict:
    s = p["summary"]
    top = _operators(p["ops"], s["device"]).head(5)
    return {"cell": s["label"], "step_us": s["step_plain_us"], "step_us_profiled": s["step_us"],
            "roofline_us": s["roofline_us"], "x_roofline": s["x_roofline"],
            "operators_pct": 100 * s["operators_share"], "outside_pct": 100 * s["outside_share"],
            "python_pct": 100 * s["python_share"], "gpu_busy_pct": 100 * s["device_busy_share"],
            "loader_pct_of_epoch": 100 * loader_share,
            "top_operators": ", ".join(f"{short(r.op, 40)} {r.share:.0%}" for r in top.itertuples()) or "none"}


def _figure(chosen: list[dict], out: Path):
    """One stacked bar per cell: the named operators, the other operators, the time outside any operator."""
    from bench.report.figures import _save, plt

    totals: dict[str, float] = {}
    for p in chosen:
        for r in _operators(p["ops"], "cpu").head(5).itertuples():
            totals[r.op] = max(totals.get(r.op, 0.0), r.self_cpu_us / p["summary"]["step_us"])
    named = sorted(totals, key=totals.get, reverse=True)[:NAMED]
    labels = [f"{p['summary']['model']}/{p['summary']['form']}/{p['summary']['device']} b{p['summary']['batch_size']}"
              f" t{p['summary']['threads']}" for p in chosen]
    parts = {}
    for name in named:
        parts[short(name, 32)] = [float(p["ops"].loc[p["ops"]["op"] == name, "self_cpu_us"].sum()) for p in chosen]
    parts["other operators"] = [max(0.0, p["summary"]["operators_us"] - sum(parts[short(n, 32)][i] for n in named))
                                for i, p in enumerate(chosen)]
    parts["outside any operator"] = [p["summary"]["outside_us"] for p in chosen]
    palette = [c for i, c in enumerate(plt.cm.tab10.colors) if i not in (3, 7)]  # red and grey mean the rest
    colors = [*palette[:len(named)], "#b0b0b0", "#d62728"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.6 + 0.45 * len(chosen)), sharey=True)
    steps = [sum(v[i] for v in parts.values()) for i in range(len(chosen))]
    for ax, scale, xlabel in ((axes[0], [1.0] * len(chosen), "CPU us per step (under the profiler)"),
                              (axes[1], [100 / t if t else 0.0 for t in steps], "% of the step")):
        left = [0.0] * len(chosen)
        for (name, values), color in zip(parts.items(), colors):
            widths = [v * k for v, k in zip(values, scale)]
            ax.barh(labels, widths, left=left, color=color, label=name, hatch="//" if "outside" in name else None)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="x", alpha=0.3)
    for y, total in enumerate(steps):
        axes[0].annotate(f"{total:,.0f} us", (total, y), xytext=(3, 0), textcoords="offset points", va="center",
                         fontsize=8)
    axes[0].margins(x=0.12)
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(5))
    axes[0].xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("where a step's time goes: top operators (self time), other operators, outside any operator",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, out, "why_not_roofline"), None


def why_section(run, out: Path) -> Section | None:
    """The section "Why not at the roofline"; without ``profiles/``, the command that makes them (None for a
    run that timed nothing)."""
    s = Section("Why not at the roofline")
    if not (run.folder / PROFILES).is_dir():
        if not (run.results["status"] == "ok").any():
            return None
        s.not_shown(f"why not at the roofline: no profiles in this run; make them with: linbench profile --run "
                    f"{run.folder} --best, then linbench report {run.folder}")
        return s
    s.text("linbench profile ran these cells' training steps under torch.profiler, on batches already on the "
           "device after a warm-up. step_us: the step timed without the profiler (x_roofline: its multiple of the "
           "roofline time, the larger of FLOPs over the probed GFLOP/s and bytes over the probed GB/s); "
           "step_us_profiled: under it. operators_pct: the share of the profiled step inside operators (aten ops "
           "and compiled kernels, each counted once at its outermost level); outside_pct: the rest, Python and "
           "framework overhead (autograd's engine, dynamo's guards), of which python_pct is the step function's "
           "own Python. Top operators: by self time (on CUDA: their kernels' time). One cell per model, form and "
           "device: the one whose step handles the most samples per second.")
    profiles = read_profiles(run.folder)
    if not profiles:
        s.not_shown(f"why not at the roofline: {PROFILES}/ holds no profile (linbench profile --run "
                    f"{run.folder} --best)")
        return s
    chosen = _best(profiles)
    shares = _loader_shares(run, [p["summary"] for p in chosen])
    rows = pd.DataFrame([_row(p, share) for p, share in zip(chosen, shares)], columns=SHOWN)
    s.table("why_not_roofline", rows.dropna(axis=1, how="all"))
    s.points(f"{p['summary']['label']}: {reading(p['summary'], p['ops'], share)}." for p, share in zip(chosen, shares))
    s.figure(_figure(chosen, out), "each profiled step split into its top operators, the other operators and "
             "the time outside any operator, in us and in % of the step")
    return s
