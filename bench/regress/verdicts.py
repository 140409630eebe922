"""Two runs compared: per cell and metric, a verdict on B's times against A's from their raw samples
(:func:`compare_runs`: every comparison of the two runs judged together by :func:`bench.regress.stats.decide`),
and what differs between the two environments (:func:`environment_differences`). ``linbench compare`` and the
report read two finished runs this way (Welch's t on the logs of the raw samples); ``linbench ab`` hands in its
paired rounds' estimates instead.

Cells join on every axis of the grid, so cells at other thread counts (or batch sizes, ...) are other
cells and never compared; runs with no device in common (a CPU run against a GPU run) join on the
other axes. A cell timed in one run only is listed, as ``only in A`` or ``only in B``. Runs from before
raw samples were kept (no ``samples.csv``) are compared by their medians only, verdict inconclusive.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.grid import AXES, label_of
from bench.runs.run_folder import Run
from bench.runs.tables import fmt

# metric of samples.csv -> its results column, the column's unit in seconds, and its count column
METRICS = {"epoch": ("epoch_s", 1.0, "n"), "step": ("step_ms", 1e-3, "step_n"),
           "loader_epoch": ("loader_epoch_s", 1.0, "loader_n")}
ONLY = ("only in A", "only in B")
ORDER = ("slower", "faster", "inconclusive", "same", *ONLY)  # the table's order of rows
FIELDS = ["n_a", "n_b", "median_a", "median_b", "ratio", "ratio_lo", "ratio_hi", "level", "p_diff", "p_same",
          "verdict", "reason"]


def _value(v):
    """An axis value as one type whichever file it came from (2, 2.0 and numpy's 2 are one key)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v.item() if hasattr(v, "item") else v


def _flag(v) -> bool:
    return v is True or str(v).strip().lower() in ("true", "1", "1.0")


def _cells(run: Run) -> dict[tuple, dict]:
    ok = run.results[run.results["status"] == "ok"]
    return {tuple(_value(r[a]) for a in AXES): r for r in ok.to_dict("records")}


def _samples(run: Run) -> dict[tuple, list] | None:
    """(cell key, metric) -> seconds; None for a run without raw samples."""
    frame = getattr(run, "samples", None)
    if frame is None:
        return None
    out: dict[tuple, list] = {}
    for r in frame.to_dict("records"):
        out.setdefault((tuple(_value(r[a]) for a in AXES), r["metric"]), []).append(float(r["seconds"]))
    return out


def _near(key: tuple, others, keys: list[str]) -> str:
    """The cells of ``others`` (the other run's, not timed in this one) that differ from ``key`` in one
    axis only, in words ("threads 1"): the likely counterpart of a cell that did not join."""
    found = {}
    for other in others:
        diff = [i for i, (x, y) in enumerate(zip(key, other)) if x != y]
        if len(diff) == 1:
            found.setdefault(keys[diff[0]], []).append(str(other[diff[0]]))
    return "; ".join(f"{axis} {', '.join(values)}" for axis, values in found.items())


def _unpaired(label: str, metric: str, sa: list, sb: list):
    from bench.regress.stats import unpaired

    return unpaired(sa, sb)


def compare_runs(a: Run, b: Run, min_effect: float = 0.05, alpha: float = 0.05, estimate=_unpaired) -> pd.DataFrame:
    """One row per cell timed in both runs and metric (epoch, step, loader_epoch): the cell's label and
    axes, the medians, :func:`bench.regress.stats.decide`'s fields and ``disturbed`` (the load disturbed either
    run's cell); then one row per cell timed in one run only (verdict ``only in A``/``only in B``, no metric).
    ``estimate(label, metric, samples_a, samples_b)`` gives each comparison's Estimate (default: unpaired).
    Rows slower first (see :data:`ORDER`). When the runs share no device, ``device_b`` is B's device."""
    from bench.regress.stats import decide

    cells_a, cells_b = _cells(a), _cells(b)
    keys = list(AXES)
    if cells_a and cells_b and not {k[AXES.index("device")] for k in cells_a} & {
            k[AXES.index("device")] for k in cells_b}:
        keys.remove("device")
    pick = [AXES.index(k) for k in keys]
    by_a = {tuple(k[i] for i in pick): k for k in cells_a}
    by_b = {tuple(k[i] for i in pick): k for k in cells_b}
    samples_a, samples_b = _samples(a), _samples(b)
    rows, judged = [], []  # judged: (row, estimate) of each comparison with samples on both sides
    for joined, key_a in by_a.items():
        if joined not in by_b:
            continue
        key_b = by_b[joined]
        axes = dict(zip(AXES, key_a))
        device_b = key_b[AXES.index("device")]
        label = label_of(axes if "device" in keys else dict(axes, device=f"{axes['device']}-vs-{device_b}"))
        base = {"cell": label, **axes, **({} if "device" in keys else {"device_b": device_b})}
        disturbed = _flag(cells_a[key_a].get("disturbed")) or _flag(cells_b[key_b].get("disturbed"))
        for metric, (column, unit, count) in METRICS.items():
            sa = (samples_a or {}).get((key_a, metric))
            sb = (samples_b or {}).get((key_b, metric))
            if sa and sb:
                rows.append({**base, "metric": metric, "n_a": len(sa), "n_b": len(sb), "median_a": float(np.median(sa)),
                             "median_b": float(np.median(sb)), "disturbed": disturbed})
                judged.append((rows[-1], estimate(base["cell"], metric, sa, sb)))
                continue
            med = [float(pd.Series(s).median()) if s else cells[k][column] * unit
                   for s, cells, k in ((sa, cells_a, key_a), (sb, cells_b, key_b))]
            if not all(math.isfinite(m) for m in med):
                continue  # the metric was not measured in this cell
            n = [len(s) if s else cells[k][count] for s, cells, k in ((sa, cells_a, key_a), (sb, cells_b, key_b))]
            lacking = ", ".join(r.id for r, s in ((a, sa), (b, sb)) if not s)
            rows.append({**base, "metric": metric, "n_a": n[0], "n_b": n[1], "median_a": med[0], "median_b": med[1],
                         "ratio": med[1] / med[0] if med[0] > 0 else math.nan, "ratio_lo": math.nan,
                         "ratio_hi": math.nan, "verdict": "inconclusive",
                         "reason": f"no raw samples in {lacking}", "disturbed": disturbed})
    for (row, _), judgement in zip(judged, decide([e for _, e in judged], min_effect, alpha)):
        row.update(judgement)
    for side, (mine, other, run) in zip(ONLY, ((by_a, by_b, b), (by_b, by_a, a))):
        for joined, key in mine.items():
            if joined not in other:
                near = _near(joined, [k for k in other if k not in mine], keys)
                rows.append({"cell": label_of(dict(zip(AXES, key))), **dict(zip(AXES, key)), "metric": "",
                             "verdict": side, "reason": f"not timed in {run.id}"
                             + (f", which has it at {near}" if near else "")})
    columns = ["cell", *AXES, *([] if "device" in keys else ["device_b"]), "metric", *FIELDS, "disturbed"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["disturbed"] = frame["disturbed"].astype(object).where(frame["disturbed"].notna(), False).astype(bool)
    rank = frame["verdict"].map({v: i for i, v in enumerate(ORDER)})
    return frame.iloc[rank.to_numpy().argsort(kind="stable")].reset_index(drop=True)


def _pct(x: float, y: float) -> str:
    return f" ({y / x - 1:+.0%})" if x else ""


def environment_differences(a: Run, b: Run) -> list[str]:
    """One line per difference between the runs' environments, A's value first: host, commit, uncommitted
    changes, torch threads, torch, CPU, GPU, each device's probed peaks (by how much), the load at start."""
    env_a, env_b = a.meta.get("env") or {}, b.meta.get("env") or {}
    lines = []
    for key, name in (("host", "host"), ("commit", "commit"), ("dirty", "uncommitted changes"),
                      ("threads", "torch threads"), ("torch", "torch"), ("cpu", "cpu"), ("gpu", "gpu")):
        va, vb = env_a.get(key), env_b.get(key)
        if key == "commit":
            va, vb = (str(v)[:10] if v else v for v in (va, vb))
        if key == "dirty":
            va, vb = ("yes" if v else "no" if v is not None else v for v in (va, vb))
        if va != vb:
            lines.append(f"{name} {'none' if va is None else va} vs {'none' if vb is None else vb}")
    peaks_a, peaks_b = a.meta.get("peaks") or {}, b.meta.get("peaks") or {}
    for device in dict.fromkeys([*peaks_a, *peaks_b]):
        if device not in peaks_a or device not in peaks_b:
            lines.append(f"{device} peaks probed in {a.id if device in peaks_a else b.id} only")
            continue
        for measure in ("gflops", "gbps"):
            x, y = (p[device].get(measure, math.nan) for p in (peaks_a, peaks_b))
            if fmt(float(x)) != fmt(float(y)):
                lines.append(f"{device} {measure} {fmt(float(x))} vs {fmt(float(y))}{_pct(x, y)}")
    load_a, load_b = a.meta.get("load_at_start"), b.meta.get("load_at_start")
    if load_a != load_b:
        words = [f"others {la['others']:.0%} of the CPU, load average {la.get('loadavg', '?')}"
                 if isinstance(la, dict) and "others" in la else "not recorded" if la is None else str(la)
                 for la in (load_a, load_b)]
        if words[0] != words[1]:
            lines.append(f"load at start: {words[0]} vs {words[1]}")
    return lines


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many rows have each verdict (every verdict, 0 included), and how many were disturbed."""
    return {**{v: int((frame["verdict"] == v).sum()) for v in ORDER}, "disturbed": int(frame["disturbed"].sum())}


def summary(frame: pd.DataFrame) -> str:
    """The comparison in one line: the count of each verdict."""
    c = counts(frame)
    compared = len(frame) - c["only in A"] - c["only in B"]
    return (f"{compared} comparisons: " + ", ".join(f"{c[v]} {v}" for v in ORDER[:4])
            + f" ({c['disturbed']} on disturbed cells); cells {c['only in A']} only in A, {c['only in B']} only in B")
