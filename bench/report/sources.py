"""Every result source read into one tidy frame (:data:`SOURCE_COLUMNS`), and the side-by-side table.

Sources: the runner's run folder (through :class:`bench.runs.run_folder.Run`), asv's results folder and
pytest-benchmark's ``--benchmark-json`` files. One row per benchmark, cell and value. asv's and
pytest-benchmark's timings are named by the linbench metric they measure (:data:`ASV_METRICS`,
``extra_info``) in that metric's unit, so a cell's three numbers meet in one side-by-side row.
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES, AXIS, parse_label
from bench.runs.run_folder import Run

SOURCE_COLUMNS = ["source", "benchmark", *AXES, "value", "unit", "commit", "machine", "date"]
RUNNER_METRICS = {"epoch_s": "s", "step_ms": "ms", "loader_epoch_s": "s", "compile_s": "s"}
ASV_METRICS = {  # asv class.method -> (linbench metric, factor from asv's seconds to that metric's unit)
    "Step.time_step": ("step_ms", 1e3),
    "CudaStep.track_step": ("step_ms", 1e3),
    "Epoch.track_epoch_s": ("epoch_s", 1.0),
    "Loader.track_loader_epoch_s": ("loader_epoch_s", 1.0),
    "Compile.track_compile_s": ("compile_s", 1.0),
}


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def cell_axes(label: str) -> dict:
    """A cell label (``model/form/device/loader/wN/bN``, every axis of the grid's table) as axes; asv's
    Loader labels read form ``any``."""
    return parse_label(label).as_dict()


def _asv_axes(given: dict) -> dict:
    """The axes of one asv combination: its ``cell`` label, or parameters named after axes. The
    label that is not a cell's names no axis, so its row is left to ``sources.csv``."""
    if "cell" not in given:
        return {k: v for k, v in given.items() if k in AXES}
    try:
        return cell_axes(str(given["cell"]))
    except UserError:
        return {}


def read_runner(run: Run) -> pd.DataFrame:
    """The run's timed cells as tidy rows: one per cell and metric; the machine is the row's own where the
    results have a ``machine`` column, else the run's host."""
    ok = run.results[run.results["status"] == "ok"]
    env, own = run.meta.get("env", {}), ["machine"] if "machine" in ok.columns else []
    frame = ok.melt(id_vars=[*AXES, *own], value_vars=list(RUNNER_METRICS), var_name="benchmark")
    frame = frame.dropna(subset=["value"])
    frame["source"], frame["unit"] = "linbench", frame["benchmark"].map(RUNNER_METRICS)
    machine = (frame["machine"].astype(object).where(frame["machine"].notna(), "").astype(str) if own
               else pd.Series("", index=frame.index))
    frame["machine"] = machine.mask(machine == "", env.get("host", ""))
    frame["commit"], frame["date"] = str(env.get("commit") or "")[:8], env.get("time", "")
    return frame.reindex(columns=SOURCE_COLUMNS)


def read_asv(folder) -> pd.DataFrame:
    """asv 0.6 results (``<results_dir>/<machine>/<commit>-<env>.json``): one row per benchmark and params.

    Parameter names and units come from ``<results_dir>/benchmarks.json`` where present; skipped or
    failed combinations (no value) are left out. The benchmarks of :data:`ASV_METRICS` are renamed to
    their linbench metric and converted from seconds to its unit; others (memory) keep asv's. Every
    machine's folder is read, each row keeping its ``machine`` (the folder's name: asv's machine name), so
    results of two machines stay two rows.
    """
    folder, rows = Path(folder), []
    if not folder.is_dir():
        raise UserError(f"{folder}: no such asv results folder")
    try:
        info = json.loads((folder / "benchmarks.json").read_text()) if (folder / "benchmarks.json").exists() else {}
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{folder / 'benchmarks.json'}: not an asv benchmarks file") from None
    files = [p for p in sorted(folder.glob("*/*.json")) if p.name != "machine.json"]
    if not files:
        raise UserError(f"{folder}: no asv results (expected <machine>/<commit>-<env>.json)")
    for path in files:
        try:
            data = json.loads(path.read_text())
            columns, results = data["result_columns"], data["results"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: not an asv results file") from None
        for name, values in results.items():
            entry = dict(zip(columns, values))
            params, meta = entry.get("params") or [], info.get(name, {})
            names = meta.get("param_names") or [f"p{i}" for i in range(len(params))]
            combos = pd.MultiIndex.from_product(params).tolist() if params else [()]
            result = entry.get("result")
            for combo, value in zip(combos, result if isinstance(result, list) else [result]):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                benchmark, unit = name.split(".", 1)[-1] if "." in name else name, meta.get("unit", "")
                if benchmark in ASV_METRICS:  # seconds -> the linbench metric, in its unit
                    benchmark, factor = ASV_METRICS[benchmark]
                    value, unit = value * factor, RUNNER_METRICS[benchmark]
                row = dict(source="asv", benchmark=benchmark, value=value, unit=unit,
                           commit=str(data.get("commit_hash", ""))[:8], machine=path.parent.name, date=data.get("date"))
                row.update(_asv_axes({k: _literal(v) for k, v in zip(names, combo)}))
                rows.append(row)
    return pd.DataFrame(rows, columns=SOURCE_COLUMNS)


def read_pytest_benchmark(paths) -> pd.DataFrame:
    """pytest-benchmark's ``--benchmark-json`` files: one row per benchmark and linbench metric in its
    ``extra_info`` (``step_ms``, ``epoch_s``: already in linbench's unit, from the median)."""
    rows = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text())
            benchmarks = data["benchmarks"]
        except FileNotFoundError:
            raise UserError(f"{path}: missing") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: not a pytest-benchmark JSON file") from None
        for b in benchmarks:
            extra = b.get("extra_info") or {}
            common = dict(source="pytest-benchmark", commit=str((data.get("commit_info") or {}).get("id") or "")[:8],
                          machine=(data.get("machine_info") or {}).get("node", ""), date=data.get("datetime"),
                          **{k: extra[k] for k in AXES if k in extra})
            for metric, unit in RUNNER_METRICS.items():
                if extra.get(metric) is not None:  # None under --benchmark-disable
                    rows.append(dict(common, benchmark=metric, value=extra[metric], unit=unit))
    return pd.DataFrame(rows, columns=SOURCE_COLUMNS)


def read_sources(run: Run, asv_dir=None, pytest_jsons=()) -> dict[str, pd.DataFrame]:
    """Each source given, by name: ``linbench`` (the run) always, ``asv`` and ``pytest-benchmark`` if asked."""
    sources = {"linbench": read_runner(run)}
    if asv_dir:
        sources["asv"] = read_asv(asv_dir)
    if pytest_jsons:
        sources["pytest-benchmark"] = read_pytest_benchmark(pytest_jsons)
    return sources


def combine(sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every row of every source (``sources.csv``)."""
    frames = list(sources.values())
    return pd.concat([s for s in frames if not s.empty] or frames[:1], ignore_index=True)


def several_machines(sources: pd.DataFrame) -> bool:
    """Whether one source's rows come from more than one machine (e.g. asv results of two machines)."""
    return bool(sources.groupby("source")["machine"].nunique(dropna=False).gt(1).any()) if len(sources) else False


def side_by_side(sources: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, one column per source and benchmark (the newest result of each).

    Where a source holds results of several machines (:func:`several_machines`), one row per machine
    and cell, the ``machine`` column first: values of two machines are never joined, averaged or one
    kept for the other. An axis a benchmark does not take (asv's Loader has no form) reads ``any``;
    rows that name no axis at all (a benchmark unknown to asv's ``benchmarks.json``) are left to
    ``sources.csv``.
    """
    frame = sources[sources[list(AXES)].notna().any(axis=1)]
    frame = frame.sort_values("date", kind="stable", key=lambda d: d.astype(str)).copy()
    def text(v, implicit):  # an axis added later (implicit value): a source that predates it ran that value
        if pd.isna(v):
            return "any" if implicit is None else str(implicit)
        return str(int(v)) if isinstance(v, float) else str(v)

    for axis in AXES:
        frame[axis] = [text(v, AXIS[axis].implicit) for v in frame[axis]]
    key = ["machine", *AXES] if several_machines(sources) else list(AXES)
    frame["machine"] = frame["machine"].fillna("").astype(str)
    units = frame["unit"].fillna("").map(lambda u: f" ({u})" if u else "")
    frame["column"] = frame["source"] + " " + frame["benchmark"] + units
    frame = frame.drop_duplicates(["column", *key], keep="last")
    if frame.empty:
        return pd.DataFrame(columns=key)
    table = frame.pivot(index=key, columns="column", values="value")
    order = list(dict.fromkeys(frame["column"]))
    return table[[c for c in order if c in table.columns]].reset_index()
