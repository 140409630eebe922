"""Change points over asv's history: where a benchmark's level moved, at which commit, by how much.

asv keeps one results file per machine, commit and environment (``<results>/<machine>/<commit>-<env>.json``,
asv 0.6). :func:`read_points` reads every machine's files into one value per commit of each *series*
(machine, environment, benchmark, parameters), ordered by asv's commit date; :func:`find_changes` finds the
change points of each series (:func:`change_points`) and describes each change: the last commit of the old
level, the first of the new one, both levels' medians and their ratio. ``linbench history`` (:func:`add_parser`)
prints them; the report draws them (:mod:`bench.report.history`).

The reader is asv's format read directly rather than :func:`bench.report.sources.read_asv`: a series needs
the environment (asv's ``env_name``), every parameter of a combination even where it is no cell of the grid,
and the benchmark's version (asv compares only results of a benchmark's current version, as here: results of
another version are left out and counted). Every asv benchmark of this project is lower-is-better (times,
bytes, instructions), so a ratio above 1 is a regression: ``slower`` for times.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import UserError

MIN_STEP = 0.05  # the smallest change of level reported: |after / before - 1|
# instruction counts (asv's Instructions) move only when the code does: their changes are reported from 0.5%
MIN_STEP_OF_UNIT = {"instructions": 0.005}
PENALTY = 2.0  # the penalty per change point, in units of noise x log(n): see change_points
MIN_POINTS = 4  # shorter series are skipped: two levels of two commits each at the least
MIN_SIZE = 2  # commits per level at the least: one odd commit is an outlier, not a level
NOISE_FLOOR = 0.001  # the noise assumed at the least (0.1%): deterministic counts (bytes, instructions) have none
NOT_POSITIVE = "a value not positive"  # a series skipped for it: a change of level is a ratio
KEY = ["machine", "env", "benchmark", "params"]
CHANGES = [*KEY, "unit", "commit_before", "commit_after", "date_after", "median_before", "median_after", "ratio",
           "direction"]
WORDS = {"seconds": ("slower", "faster"), "bytes": ("larger", "smaller"), "instructions": ("more", "fewer")}
SCALES = {"seconds": ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")), "bytes": ((2**30, "GiB"), (2**20, "MiB"))}


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _label(names: list[str], combo: tuple) -> str:
    """A parameter combination in words: a lone parameter's value (a cell's label), else ``name=value, ...``."""
    values = [str(_literal(v)) for v in combo]
    return values[0] if len(values) == 1 else ", ".join(f"{n}={v}" for n, v in zip(names, values))


def _unit(name: str, meta: dict) -> str:
    """asv's unit of a benchmark: ``benchmarks.json``'s, else the one its kind implies."""
    kind = name.rsplit(".", 1)[-1].split("_", 1)[0]
    return meta.get("unit") or {"time": "seconds", "mem": "bytes", "peakmem": "bytes"}.get(kind, "")


def _rows(path: Path, data: dict, info: dict) -> tuple[list[dict], int]:
    """The measured values of one asv results file as :func:`read_points`' rows, and how many were left out
    as measured by another version of their benchmark than ``benchmarks.json``'s."""
    columns, date = data["result_columns"], float(data["date"])
    named_commit, _, named_env = path.stem.partition("-")  # asv's <commit>-<env>.json
    commit, env = str(data.get("commit_hash") or named_commit), str(data.get("env_name") or named_env)
    rows, other_version = [], 0
    for name, row in data["results"].items():
        entry, meta = dict(zip(columns, row)), info.get(name, {})
        result, params = entry.get("result"), entry.get("params") or []
        names = meta.get("param_names") or [f"p{i}" for i in range(len(params))]
        combos = pd.MultiIndex.from_product(params).tolist() if params else [()]
        values = result if isinstance(result, list) else [result]
        if "version" in meta and entry.get("version") not in (None, meta["version"]):
            other_version += sum(v is not None for v in values)
            continue
        for combo, value in zip(combos, values):
            if isinstance(value, (int, float)) and math.isfinite(value):
                rows.append(dict(machine=path.parent.name, env=env, benchmark=name.split(".", 1)[-1],
                                 params=_label(names, combo), unit=_unit(name, meta),
                                 commit=commit[:8], date=date, value=float(value)))
    return rows, other_version


def read_points(folder) -> tuple[pd.DataFrame, int]:
    """Every measured value in an asv results folder, one row per series and commit (:data:`KEY`, ``unit``,
    ``commit`` (8 characters), ``date`` (asv's commit date, ms), ``value`` in asv's unit), and how many
    values were left out as results of another version of their benchmark."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such asv results folder")
    try:
        info = json.loads((folder / "benchmarks.json").read_text()) if (folder / "benchmarks.json").exists() else {}
    except (OSError, ValueError):
        raise UserError(f"{folder / 'benchmarks.json'}: not an asv benchmarks file") from None
    if not isinstance(info, dict):
        raise UserError(f"{folder / 'benchmarks.json'}: not an asv benchmarks file")
    files = [p for p in sorted(folder.glob("*/*.json")) if p.name != "machine.json"]
    if not files:
        raise UserError(f"{folder}: no asv results (expected <machine>/<commit>-<env>.json)")
    rows, other_version = [], 0
    for path in files:
        try:
            found, left_out = _rows(path, json.loads(path.read_text()), info)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # ValueError: JSON's and Unicode's too
            raise UserError(f"{path}: not an asv results file") from None
        rows, other_version = rows + found, other_version + left_out
    frame = pd.DataFrame(rows, columns=[*KEY, "unit", "commit", "date", "value"])
    # one value per commit (a rerun replaces asv's file; a copy under another name is the same commit)
    frame = frame.groupby([*KEY, "unit", "commit", "date"], as_index=False, sort=False)["value"].median()
    return frame.sort_values([*KEY, "date", "commit"], kind="stable").reset_index(drop=True), other_version


def noise(logs) -> float:
    """The noise of a series of logs, robustly: the MAD of its first differences / sqrt(2) (a difference of
    two noisy points has twice the variance; a step is one difference, which the median ignores), as a
    normal standard deviation (x 1.4826), at least :data:`NOISE_FLOOR`."""
    d = np.diff(np.asarray(logs, dtype=float))
    if d.size == 0:
        return NOISE_FLOOR
    return max(1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2), NOISE_FLOOR)


def change_points(values, min_step: float = MIN_STEP, penalty: float = PENALTY, min_size: int = MIN_SIZE) -> list[int]:
    """The indices where a new level of ``values`` starts (none: a flat series), found by ruptures' PELT.

    On the logs of the values: a slowdown is a factor, whatever the level. Cost ``l1`` (absolute deviations
    from each segment's median, as asv's own step detection): one odd commit (measured on a busy machine)
    cannot pay for a level of its own, since with ``min_size`` 2 it and its neighbour cost as much alone as
    in the long level; under ``l2`` most single 30% outliers came out as two changes. Penalty per change
    ``penalty x noise x log(n)``: BIC's for a shift of a Laplace-noise level (two parameters per change,
    ``log(n)/2`` each in units of the mean absolute deviation, about 0.8 x the noise's sd) is ``0.8 x noise
    x log(n)``; the default 2 is 2.5 times that, as the noise is itself estimated from the few points of a
    short history (:func:`noise`). In simulation (lognormal noise, 4 to 12 points) it calls 2 to 4% of flat
    series changed and places a 15% step at its commit in 80 to 90% of them at 3% noise; at 2% noise, 1% and
    94 to 99%. Then changes of level under ``min_step`` (``|after/before - 1|`` of the levels' medians) are
    dropped, the smallest first, the levels recomputed each time."""
    import ruptures

    logs = np.log(np.asarray(values, dtype=float))
    n = len(logs)
    if n < 2 * min_size:
        return []
    found = ruptures.Pelt(model="l1", min_size=min_size, jump=1).fit(logs).predict(
        pen=penalty * noise(logs) * math.log(n))[:-1]
    while found:
        edges = [0, *found, n]
        levels = [float(np.median(logs[a:b])) for a, b in zip(edges, edges[1:])]
        steps = [abs(math.expm1(after - before)) for before, after in zip(levels, levels[1:])]
        smallest = int(np.argmin(steps))
        if steps[smallest] >= min_step:
            break
        del found[smallest]
    return found


def direction(unit: str, ratio: float) -> str:
    """The change in words, lower being better everywhere: ``slower``/``faster`` for times, ``larger``/
    ``smaller`` for bytes, ``more``/``fewer`` instructions, ``higher``/``lower`` otherwise."""
    worse, better = WORDS.get(unit, ("higher", "lower"))
    return worse if ratio > 1 else better


def scale(unit: str, typical: float) -> tuple[float, str]:
    """A readable unit for values near ``typical`` in asv's ``unit``: (asv's units per it, its name)."""
    for factor, name in SCALES.get(unit, ()):
        if abs(typical) >= factor:
            return factor, name
    return (SCALES[unit][-1] if unit == "seconds" else (1.0, unit))


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


@dataclass
class History:
    """The series of an asv results folder and their changes (see :func:`find_changes`)."""
    folder: Path
    points: pd.DataFrame  # read_points' rows of the series examined, with ``series`` (a number), ``segment``
    # (the level's number in its series) and ``level`` (its median)
    changes: pd.DataFrame  # CHANGES, one row per change, the largest first
    series: pd.DataFrame  # one row per series: KEY, unit, n, changes (None: skipped)
    other_version: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What was examined and found, in one line."""
        examined = int(self.series["changes"].notna().sum())
        changed = int((self.series["changes"].fillna(0) > 0).sum())
        text = (f"{examined} series examined over {self.points['commit'].nunique()} commits: "
                + (f"{_count(len(self.changes), 'change')} in {changed} series" if changed else "none changed"))
        short = sum(not s.endswith(NOT_POSITIVE) for s in self.skipped)
        if short:
            text += f"; {short} series skipped (fewer than {MIN_POINTS} commits)"
        if len(self.skipped) > short:
            text += f"; {len(self.skipped) - short} series skipped ({NOT_POSITIVE})"
        if self.other_version:
            text += f"; {self.other_version} results of another benchmark version left out"
        return text


def find_changes(folder, min_step: float = MIN_STEP, penalty: float = PENALTY) -> History:
    """Every series of the asv results ``folder`` with :data:`MIN_POINTS` commits or more, its change points
    (:func:`change_points`) and the changes: the last commit of the old level and the first of the new one,
    both levels' medians in a readable unit, their ratio (after / before) and its direction."""
    if not 0 <= min_step < math.inf:
        raise UserError(f"--min-step must be at least 0, got {min_step}")
    if not 0 < penalty < math.inf:
        raise UserError(f"--penalty must be positive, got {penalty}")
    points, other_version = read_points(folder)
    changes, series, skipped, examined = [], [], [], []
    for i, (key, group) in enumerate(points.groupby(KEY, sort=True)):
        group, described = group.reset_index(drop=True), dict(zip(KEY, key), unit=group["unit"].iloc[0], n=len(group))
        if len(group) < MIN_POINTS or (group["value"] <= 0).any():
            why = _count(len(group), "commit") if len(group) < MIN_POINTS else NOT_POSITIVE
            skipped.append(f"{key[2]} {key[3]} on {key[0]} ({key[1]}): {why}")
            series.append(dict(described, changes=None))
            continue
        found = change_points(group["value"], min(min_step, MIN_STEP_OF_UNIT.get(described["unit"], min_step)),
                              penalty)
        edges = [0, *found, len(group)]
        medians = [float(group["value"].iloc[a:b].median()) for a, b in zip(edges, edges[1:])]
        examined.append(group.assign(series=i, segment=np.repeat(np.arange(len(medians)), np.diff(edges)),
                                     level=np.repeat(medians, np.diff(edges))))
        factor, unit = scale(described["unit"], float(group["value"].median()))
        for at, before, after in zip(found, medians, medians[1:]):
            changes.append(dict(zip(KEY, key), unit=unit, commit_before=group["commit"].iloc[at - 1],
                                commit_after=group["commit"].iloc[at], date_after=group["date"].iloc[at],
                                median_before=before / factor, median_after=after / factor, ratio=after / before,
                                direction=direction(described["unit"], after / before)))
        series.append(dict(described, changes=len(found)))
    frame = pd.DataFrame(changes, columns=CHANGES)
    frame = frame.iloc[np.argsort(-np.abs(np.log(frame["ratio"].to_numpy(dtype=float))), kind="stable")]
    kept = (pd.concat(examined, ignore_index=True) if examined
            else points.assign(series=0, segment=0, level=np.nan).iloc[:0])
    return History(Path(folder), kept, frame.reset_index(drop=True),
                   pd.DataFrame(series, columns=[*KEY, "unit", "n", "changes"]), other_version, skipped)


def table_columns(changes: pd.DataFrame) -> list[str]:
    """The columns of the table of changes: the environment only where the results have several."""
    return [c for c in CHANGES if c != "date_after" and (c != "env" or changes["env"].nunique() > 1)]
