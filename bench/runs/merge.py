"""``linbench merge RUN... --out DIR``: the shard runs of one grid (``linbench run --shard I/N``) joined into
one run folder, which ``linbench report`` and ``linbench compare`` read like any other.

Refused, each in one line: runs of different grids (their configs differ: grid, overrides, quick,
repeats, seed, ...; the data folder may differ), different results schemas, different thread settings
(the threads axis values, and torch's thread count where that axis was left to its default), an
interrupted run, cells in two runs, and shards that do not make up their grid (a shard missing, given
twice, or of another split). Unsharded runs of one grid merge too where their cells are disjoint.

The merged folder: ``results.csv`` with each cell's ``machine`` (its run's host), ``samples.csv``,
``gate.csv`` (one row per case, from the first run that checked it), curves and predictions (one copy
per form and device), and ``meta.json`` with the shared config, ``merged_from`` (the run ids),
``machines`` (host -> that run's environment), the first run's environment and ``complete`` true.
Speedups are computed again over the merged cells, within one machine (see
:func:`bench.report.analysis.add_speedup`). Every file is written atomically, into a hidden folder that
is renamed to ``DIR`` when whole.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES, label_of
from bench.runs.folder import os_error, umask
from bench.runs.run_folder import CURVES, GATE, PREDICTIONS, SCHEMA, Run, read_samples
from bench.runs.store import Store, meta_json, row_key

IGNORED = ("data_dir",)  # config keys that may differ between machines: where the data is, not what is measured


def _raw_meta(folder: Path) -> dict:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such run folder")
    return meta_json(folder)


def _config(meta: dict) -> dict:
    """The config as compared: the keys of :data:`IGNORED` left out, overrides left out where not given."""
    config = {k: v for k, v in (meta.get("config") or {}).items() if k not in IGNORED}
    config["overrides"] = {k: v for k, v in (config.get("overrides") or {}).items() if v}
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _threads(meta: dict) -> tuple:
    """The run's thread settings: the threads axis values it was given (``--threads``; None: torch's own), and
    torch's thread count where the axis was left to that default."""
    given = ((meta.get("config") or {}).get("overrides") or {}).get("threads")
    return (tuple(given) if given else None), (None if given else (meta.get("env") or {}).get("threads"))


def _threads_text(setting: tuple) -> str:
    values, torch_threads = setting
    return (f"threads axis {','.join(map(str, values))}" if values else
            f"threads axis left to torch's own, torch threads {torch_threads}")


def check(runs: list[Run]) -> None:
    """The runs can be merged into one, or a one-line user error says why not."""
    first = runs[0]
    ids = [str(r.folder) for r in runs]
    for r, folder in zip(runs, ids):
        if not r.meta.get("complete", False):
            raise UserError(f"{folder} is an interrupted run (complete: false): finish it with "
                            f"linbench run --resume {folder}, then merge")
    for r, folder in zip(runs[1:], ids[1:]):
        a, b = _config(first.meta), _config(r.meta)
        if a != b:
            keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
            raise UserError(f"{ids[0]} and {folder} are runs of different grids (their config differs in "
                            f"{', '.join(keys)}); merge only the shards of one grid")
        if _threads(first.meta) != _threads(r.meta):
            raise UserError(f"{ids[0]} and {folder} differ in thread settings ({_threads_text(_threads(first.meta))} "
                            f"against {_threads_text(_threads(r.meta))}); run every shard with the same --threads")
    _check_shards(runs, ids)
    owner: dict[tuple, str] = {}
    for r, folder in zip(runs, ids):
        for row in r.results.to_dict("records"):
            key = row_key(row)
            if key in owner:
                raise UserError(f"cell {label_of(row)} is in both {owner[key]} and {folder}: the runs overlap; "
                                "merge runs of disjoint cells (the shards of one grid)")
            owner[key] = folder


def _check_shards(runs: list[Run], ids: list[str]) -> None:
    shards = [r.meta.get("shard") for r in runs]
    if not any(shards):
        return
    if not all(isinstance(s, dict) for s in shards):
        plain = next(folder for s, folder in zip(shards, ids) if not isinstance(s, dict))
        raise UserError(f"{plain} is not a shard run, the others are: merge the shards of one grid")
    counts = {s.get("count") for s in shards}
    if len(counts) > 1:
        raise UserError("the runs are shards of different splits (" + ", ".join(
            f"{folder}: {s.get('index')}/{s.get('count')}" for s, folder in zip(shards, ids)) + ")")
    count, given = counts.pop(), {}
    for s, folder in zip(shards, ids):
        if s.get("index") in given:
            raise UserError(f"shard {s.get('index')}/{count} is given twice: {given[s.get('index')]} and {folder}")
        given[s.get("index")] = folder
    missing = [i for i in range(1, int(count) + 1) if i not in given]
    if missing:
        raise UserError(f"shard {missing[0]} of {count} is missing" + (f" (and {len(missing) - 1} more)"
                        if len(missing) > 1 else "") + f"; given: {', '.join(map(str, sorted(given)))}")
    if len({s.get("grid_hash") for s in shards}) > 1:
        raise UserError("the shards expanded different grids (their grid hashes differ: another thread count by "
                        "default, or another linbench); run every shard with the same linbench and --threads")
    owner: dict[str, str] = {}
    for s, folder in zip(shards, ids):
        for label in s.get("cells") or []:
            if label in owner:
                raise UserError(f"cell {label} is in both {owner[label]} and {folder}: the shards were split "
                                "differently (by another linbench)")
            owner[label] = folder
    from bench.runs.shard import grid_hash

    if len(owner) != shards[0].get("grid_cells") or grid_hash(owner) != shards[0].get("grid_hash"):
        raise UserError(f"the shards' cells ({len(owner)}) do not make up their grid ({shards[0].get('grid_cells')} "
                        "cells): the shards were split differently (by another linbench)")


def _first_per_pair(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    """Curves or predictions of several runs: each (form, device) from the first run that has it."""
    seen, parts = set(), []
    for frame in frames:
        if frame is None or frame.empty or not {"form", "device"} <= set(frame.columns):
            continue
        pairs = list(zip(frame["form"], frame["device"]))
        parts.append(frame[[p not in seen for p in pairs]])
        seen |= set(pairs)
    return pd.concat(parts, ignore_index=True).drop_duplicates() if parts else None


def _gate_key(row: dict) -> tuple:
    return tuple(str(row.get(c)) for c in (*AXES, "case") if c in row and c != "batch_size")


def _gate(runs: list[Run]) -> tuple[list[dict], pd.DataFrame | None]:
    """The gate's rows of meta.json and gate.csv: one per (model, form, device, ..., case), the first run's."""
    meta_rows, seen = [], set()
    for r in runs:
        for row in r.meta.get("gate") or []:
            if isinstance(row, dict) and _gate_key(row) not in seen:
                seen.add(_gate_key(row))
                meta_rows.append(row)
    frames = [r.gate for r in runs if r.gate is not None and not r.gate.empty]
    if not frames:
        return meta_rows, None
    table = pd.concat(frames, ignore_index=True)
    keys = [c for c in (*AXES, "case") if c in table.columns and c != "batch_size"]
    return meta_rows, table.drop_duplicates(keys, keep="first") if keys else table


def _host(run: Run) -> str:
    return str((run.meta.get("env") or {}).get("host") or run.id)


def merged_meta(runs: list[Run], run_id: str, gate_rows: list[dict]) -> dict:
    first = runs[0].meta
    meta = {"schema": SCHEMA, "run_id": run_id, "env": first.get("env", {}), "config": first.get("config", {}),
            "complete": True, "merged_from": [r.id for r in runs], "machines": {}}
    for r in runs:
        meta["machines"].setdefault(_host(r), r.meta.get("env", {}))
    if any(r.meta.get("shard") for r in runs):
        meta["shards"] = [{"run_id": r.id, "index": r.meta["shard"].get("index"), "count": r.meta["shard"].get("count"),
                           "machine": _host(r)} for r in runs]
    for name in ("peaks", "compiles", "curves_skipped"):  # per device, gate key, form: the first's
        merged = {}
        for r in runs:
            for k, v in (r.meta.get(name) or {}).items():
                merged.setdefault(k, v)
        if merged or name in first:
            meta[name] = merged
    if "load_at_start" in first:
        meta["load_at_start"] = first["load_at_start"]
    meta["gate"] = gate_rows
    return meta


def merge(folders: list, out) -> Store:
    """Merge the run ``folders`` into the new run folder ``out``; the merged :class:`~bench.runs.store.Store`."""
    folders, out = [Path(f) for f in folders], Path(out)
    if len({f.resolve() for f in folders}) < len(folders):
        raise UserError("a run is given twice")
    metas = [_raw_meta(f) for f in folders]
    if len(folders) < 2 and not metas[0].get("shard"):  # one shard alone: the check says which are missing
        raise UserError(f"give at least two runs to merge (got {len(folders)})")
    schemas = [m.get("schema") for m in metas]
    if len(set(map(str, schemas))) > 1:
        raise UserError("the runs have different results schemas (" + ", ".join(
            f"{f}: {s}" for f, s in zip(folders, schemas)) + "); merge runs of one linbench version")
    runs = [Run(f) for f in folders]  # schema, results and samples checked
    check(runs)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists; give --out a new folder")

    rows, samples = {}, {}
    for r in runs:
        host = _host(r)
        for row in r.results.to_dict("records"):
            rows[row_key(row)] = {**row, "machine": host}
        frame = read_samples(r.folder)
        for s in frame.sort_values("repeat", kind="stable").to_dict("records") if frame is not None else []:
            if row_key(s) in rows and isinstance(s["seconds"], float) and not math.isnan(s["seconds"]):
                samples.setdefault((row_key(s), s["metric"]), []).append(s["seconds"])
    gate_rows, gate = _gate(runs)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".merge-{out.name}."))
        os.chmod(tmp, 0o777 & ~umask())
    except OSError as e:
        raise os_error(e, out.parent, "write the merged run under") from None
    try:
        store = Store(tmp, merged_meta(runs, out.name, gate_rows), rows, samples)
        if gate is not None:
            store.write_table(GATE, gate)
        for name, frames in ((CURVES, [r.curves for r in runs]), (PREDICTIONS, [r.predictions for r in runs])):
            if (frame := _first_per_pair(frames)) is not None:
                store.write_table(name, frame)
        store.write()
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(e, out, "write the merged run into") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store.folder = out
    return store


def cmd_merge(args) -> int:
    from bench.report.analysis import derived, headlines, machines
    from bench.runs.run_folder import RESULTS
    from bench.runs.summary import compact

    store = merge(args.runs, args.out)
    frame = derived(store.frame(), store.samples_frame())
    for line in compact(frame, shutil.get_terminal_size((100, 24)).columns):
        print(line)
    for line in headlines(frame):
        print(line)
    hosts = machines(frame) or list(store.meta["machines"])
    print(f"merged {len(args.runs)} runs ({len(frame)} cells, {len(hosts)} machine(s): {', '.join(hosts)}): "
          f"{store.folder / RESULTS}")
    print(f"report: linbench report {store.folder}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="join the shard runs of one grid (linbench run --shard I/N) into one run folder")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders: every shard of one grid")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged run folder (new, or an empty folder)")
    p.set_defaults(func=cmd_merge)
