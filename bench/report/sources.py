"""Every result source read into one tidy frame (:data:`SOURCE_COLUMNS`), and the side-by-side table.

Sources: the runner's run folder (through :class:`bench.store.Run`), asv's results folder and
pytest-benchmark's ``--benchmark-json`` files. One row per benchmark, cell and value.
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES
from bench.store import Run

SOURCE_COLUMNS = ["source", "benchmark", *AXES, "value", "unit", "commit", "machine", "date"]
RUNNER_METRICS = {"epoch_s": "s", "step_ms": "ms", "loader_epoch_s": "s", "compile_s": "s"}


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_runner(run: Run) -> pd.DataFrame:
    """The run's timed cells as tidy rows: one per cell and metric."""
    ok = run.results[run.results["status"] == "ok"]
    frame = ok.melt(id_vars=list(AXES), value_vars=list(RUNNER_METRICS), var_name="benchmark").dropna(subset=["value"])
    frame["source"], frame["unit"] = "linbench", frame["benchmark"].map(RUNNER_METRICS)
    env = run.meta.get("env", {})
    frame["commit"], frame["machine"], frame["date"] = str(env.get("commit") or "")[:8], env.get("host", ""), env.get("time", "")
    return frame.reindex(columns=SOURCE_COLUMNS)


def read_asv(folder) -> pd.DataFrame:
    """asv 0.6 results (``<results_dir>/<machine>/<commit>-<env>.json``): one row per benchmark and params.

    Parameter names and units come from ``<results_dir>/benchmarks.json`` where present; skipped or
    failed combinations (no value) are left out.
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
                row = dict(source="asv", benchmark=name.split(".", 1)[-1] if "." in name else name, value=value,
                           unit=meta.get("unit", ""), commit=str(data.get("commit_hash", ""))[:8],
                           machine=path.parent.name, date=data.get("date"))
                row.update({k: _literal(v) for k, v in zip(names, combo) if k in AXES})
                rows.append(row)
    return pd.DataFrame(rows, columns=SOURCE_COLUMNS)


def read_pytest_benchmark(paths) -> pd.DataFrame:
    """pytest-benchmark's ``--benchmark-json`` files: one row per benchmark (its median, seconds)."""
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
            median = (b.get("stats") or {}).get("median")
            if median is None:
                continue
            extra = b.get("extra_info") or {}
            rows.append(dict(source="pytest-benchmark", benchmark=str(b.get("name", "")).split("[")[0], value=median,
                             unit="s", commit=str((data.get("commit_info") or {}).get("id") or "")[:8],
                             machine=(data.get("machine_info") or {}).get("node", ""), date=data.get("datetime"),
                             **{k: extra[k] for k in AXES if k in extra}))
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


def side_by_side(sources: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, one column per source and benchmark (the newest result of each).

    An axis a benchmark does not take (asv's Loader has no form) reads ``any``; rows that name no
    axis at all (a benchmark unknown to asv's ``benchmarks.json``) are left to ``sources.csv``.
    """
    frame = sources[sources[list(AXES)].notna().any(axis=1)]
    frame = frame.sort_values("date", kind="stable", key=lambda d: d.astype(str)).copy()
    for axis in AXES:
        frame[axis] = [("any" if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v)) for v in frame[axis]]
    units = frame["unit"].fillna("").map(lambda u: f" ({u})" if u else "")
    frame["column"] = frame["source"] + " " + frame["benchmark"] + units
    frame = frame.drop_duplicates(["column", *AXES], keep="last")
    if frame.empty:
        return pd.DataFrame(columns=list(AXES))
    table = frame.pivot(index=list(AXES), columns="column", values="value")
    order = list(dict.fromkeys(frame["column"]))
    return table[[c for c in order if c in table.columns]].reset_index()
