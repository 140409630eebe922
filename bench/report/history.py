"""The report's history section (:func:`history_section`): asv's series over their commits, each change
point and level drawn, and the table of changes. What is a change is :mod:`bench.regress.change_points`'s to say; the
figure is drawn with :mod:`bench.report.figures`' matplotlib and saved by its ``_save``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.regress.change_points import KEY, MIN_POINTS, MIN_STEP, PENALTY, History, find_changes, scale, table_columns
from bench.report import figures
from bench.report.render import Section

MOST = 12  # series drawn at most: those with changes first
TICKS = 14  # commits labelled per panel at most (every change's first commit among them)
SHORT = 48  # characters of a panel's parameters


def drawn_order(history: History) -> list[int]:
    """The series' numbers: those with changes first, the largest change first; then the others in order."""
    points = history.points.drop_duplicates("series")
    largest = {}
    for r in history.changes.to_dict("records"):
        key = tuple(r[k] for k in KEY)
        largest[key] = max(largest.get(key, 0.0), abs(math.log(r["ratio"])))
    keyed = [(-largest.get(tuple(r[k] for k in KEY), -1.0), i, r["series"])
             for i, r in enumerate(points.to_dict("records"))]
    return [series for _, _, series in sorted(keyed)]


def _ticks(n: int, starts: list[int]) -> list[int]:
    if n <= TICKS:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, TICKS - len(starts)).round().astype(int).tolist()) | set(starts))


def _panel(ax, series, several_envs: bool) -> None:
    series = series.reset_index(drop=True)
    first = series.iloc[0]
    factor, unit = scale(first["unit"], float(series["value"].median()))
    x = np.arange(len(series))
    ax.plot(x, series["value"] / factor, marker="o", ms=3, lw=0.8, color="C0", label="each commit")
    starts = []
    for number, level in series.groupby("segment", sort=True):
        at = level.index
        ax.hlines(level["level"].iloc[0] / factor, at[0] - 0.35, at[-1] + 0.35, color="C1", lw=2,
                  label="level (median)" if number == 0 else None)
        if number:
            starts.append(int(at[0]))
            worse = level["level"].iloc[0] > series["level"].iloc[int(at[0]) - 1]
            ax.axvline(at[0], color="C3" if worse else "C2", ls="--", lw=1)
    ticks = _ticks(len(series), starts)
    ax.set_xticks(ticks, [series["commit"].iloc[t] for t in ticks], rotation=90, fontsize=6, family="monospace")
    params = first["params"] if len(first["params"]) <= SHORT else first["params"][:SHORT - 1] + "…"
    env = f" ({first['env']})" if several_envs else ""
    ax.set_title(f"{params}\n{first['benchmark']} on {first['machine']}{env}", fontsize=8)
    low, high = (series["value"] / factor).agg(["min", "max"])
    middle = float(series["level"].median()) / factor  # at least +-10% around it: noise looks as small as it is
    ax.set_ylim(min(low, middle / 1.1) * 0.98, max(high, middle * 1.1) * 1.02)
    ax.set_ylabel(unit or "value", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, alpha=0.3)


def fig_history(history: History, folder: Path, most: int = MOST):
    """Each series (at most ``most``, those with changes first) against its commits in date order: the values,
    the levels, a dashed line at the first commit of each new level (red: worse, green: better)."""
    order = drawn_order(history)[:most]
    if not order:
        return None, f"history figure: no asv series has {MIN_POINTS} commits or more"
    cols = min(3, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = figures.plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False,
                                     layout="constrained")
    several_envs = history.points["env"].nunique() > 1
    for ax, number in zip(axes.flat, order):
        _panel(ax, history.points[history.points["series"] == number], several_envs)
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    return figures._save(fig, folder, "history"), None


def history_section(asv_dir, out: Path, min_step: float = MIN_STEP, penalty: float = PENALTY) -> Section | None:
    """The history of asv's results in ``asv_dir``: the figure, the table of changes and what was skipped;
    None without an asv folder."""
    if not asv_dir:
        return None
    history = find_changes(asv_dir, min_step, penalty)
    s = Section("History: change points over asv's commits")
    s.text(f"asv's results in {history.folder}, one series per machine, environment, benchmark and parameters, "
           f"its commits in asv's commit-date order: {history.summary()}. A change is where the level of a series "
           f"(the median of its commits) moves by {min_step:.0%} or more, found by PELT with an l1 cost on the "
           f"logs of the values (ruptures; penalty {penalty:g} x the noise x log(commits)); a level is two commits "
           "at the least, so the last commit alone cannot show one. Every asv benchmark here is lower-is-better: "
           "a ratio above 1 (after / before) is a regression.")
    s.figure(fig_history(history, Path(out)), "each asv series against its commits, with its levels and the "
             "first commit of each new level marked")
    left = history.points["series"].nunique() - MOST
    if left > 0:
        changed = max(0, int(history.series["changes"].fillna(0).gt(0).sum()) - MOST)
        s.text(f"{left} more series not drawn ({changed} of them with changes, in the table below).")
    if history.changes.empty:
        s.text(f"No series changed level by {min_step:.0%} or more.")
    else:
        s.table("history_changes", history.changes[table_columns(history.changes)],
                classes=["worse" if r > 1 else "better" for r in history.changes["ratio"]])
    if history.skipped:
        s.text(f"Not examined (fewer than {MIN_POINTS} commits, or a value not positive): "
               + "; ".join(history.skipped[:10]) + (f"; and {len(history.skipped) - 10} more"
                                                   if len(history.skipped) > 10 else "") + ".")
    return s
