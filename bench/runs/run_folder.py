"""A run folder's format and its readers: the schema, file names and columns, and reading each file back.

A run folder ``results/<run-id>/`` holds ``results.csv`` (one row per cell, :data:`COLUMNS`: what was measured,
nothing derived; speedups and scaling are the report's, :func:`bench.report.analysis.derived`), ``samples.csv``
(every timed repeat: the cell, ``metric`` (epoch, step, loader_epoch), ``repeat`` and ``seconds`` per epoch or per
step), ``meta.json`` (schema, config, environment, probed peaks, the load at the start, the gate, compilations),
``gate.csv`` and, when the run trained them, ``curves.csv`` and ``predictions.csv``; ``linbench counts`` adds
``counts.csv`` and ``linbench profile --run`` adds ``profiles/``. The runner writes through
:class:`bench.runs.store.Store`; the report and every other reader read through :class:`Run` and the ``read_*``
functions here, each a one-line error for a damaged file.
"""
from __future__ import annotations

import io
import json
import math
import numbers
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES, AXIS
from bench.runs.folder import meta_json, os_error
from bench.runs.status import Status
from bench.signals.callgrind import COUNT_COLUMNS

SCHEMA = 1
RESULTS, META, GATE, CURVES, PREDICTIONS = "results.csv", "meta.json", "gate.csv", "curves.csv", "predictions.csv"
SAMPLES = "samples.csv"
COUNTS = "counts.csv"  # one row per counted cell (linbench counts)
PROFILES, OPS, SUMMARY, TRACE = "profiles", "ops.csv", "summary.json", "trace.json"  # linbench profile --run
SAMPLE_COLUMNS = [*AXES, "metric", "repeat", "seconds"]
# every axis, then the measurements; "threads" (torch's thread count in the cell) is recorded for every
# row, as its axis where the grid has one
COLUMNS = list(dict.fromkeys([
    *AXES, "status", "reason",
    "samples", "samples_per_s", "epoch_s", "epoch_s_lo", "epoch_s_hi", "epoch_s_iqr", "n", "noisy",
    "step_ms", "step_ms_lo", "step_ms_hi", "step_ms_iqr", "step_n", "loader_epoch_s", "loader_epoch_s_iqr",
    "loader_n", "load", "disturbed",
    "compile_s", "eager", "whole_epoch", "peak_rss_mb", "rss_growth_mb", "cuda_peak_mb", "gflops", "gbps",
    "roofline_frac", "epoch_roofline_frac", "threads",
    "samples_per_s_per_rank", "allreduce_frac", "setup_s",  # distributed cells (ddp)
    "machine",  # the host that timed the cell, in a merged run (linbench merge); empty in a run of one machine
]))
# columns an older run folder may lack (read back as NaN): the axes, status and reason are required
LATER_COLUMNS = ("epoch_s_lo", "epoch_s_hi", "step_ms_lo", "step_ms_hi", "load", "disturbed", "rss_growth_mb",
                 "samples_per_s_per_rank", "allreduce_frac", "setup_s", "machine", "eager",
                 "whole_epoch")
DONE = tuple(Status)  # every status of a finished cell
# what an "ok" row cannot lack: a row cut short after its status is not a finished cell
MEASURED = ("samples", "samples_per_s", "epoch_s", "n", "step_ms", "loader_epoch_s")
OP_COLUMNS = ["op", "kind", "calls_per_step", "self_cpu_us", "self_cpu_share", "cpu_total_us", "self_device_us",
              "device_share"]
FLAGS = ("noisy", "disturbed", "eager", "whole_epoch")  # True/False columns
NUMERIC = [c for c in COLUMNS if c not in ("status", "reason", "machine", *FLAGS)
           and not (c in AXIS and AXIS[c].parse is str)]




def counts_frame(rows: list[dict]):
    """Rows as counts.csv's table: every axis (threads 1), status, reason, :data:`COUNT_COLUMNS`."""
    return pd.DataFrame(rows).reindex(columns=[*AXES, "status", "reason", *COUNT_COLUMNS])


def read_counts(folder: Path):
    """A run folder's counts.csv (None when it has none), checked: one-line errors for a damaged file."""
    path = Path(folder) / COUNTS
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: not a linbench counts file ({e.__class__.__name__})") from None
    frame, expected = later_axes(frame), counts_frame([]).columns
    if missing := [c for c in expected if c not in frame.columns]:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    frame["instr_per_step"] = pd.to_numeric(frame["instr_per_step"], errors="coerce")
    return frame


def read_profiles(folder: Path) -> list[dict]:
    """Every profile under ``folder``'s ``profiles/``, as :func:`profile_cell` returns them (``[]`` without any);
    a damaged one is a one-line error."""
    found = []
    for sub in sorted(p for p in (Path(folder) / PROFILES).glob("*") if (p / SUMMARY).exists()):
        try:
            summary = json.loads((sub / SUMMARY).read_text())
            ops = pd.read_csv(sub / OPS, keep_default_na=True)
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{sub}: not a linbench profile ({e.__class__.__name__}); profile the cell again") from None
        if missing := [c for c in OP_COLUMNS if c not in ops.columns]:
            raise UserError(f"{sub / OPS}: lacks columns {', '.join(missing)}")
        found.append({"summary": {k: math.nan if v is None else v for k, v in summary.items()}, "ops": ops})
    return found


def finished(row: dict) -> bool:
    """A complete row: a known status, with its numbers when "ok" and its reason otherwise."""
    if row.get("status") not in DONE:
        return False
    if row["status"] != "ok":
        return bool(row.get("reason"))
    return all(isinstance(row.get(c), numbers.Real) and not math.isnan(row[c]) for c in MEASURED)


def read_meta(folder: Path) -> dict:
    """meta.json of a run folder of this results schema (anything else is a one-line error)."""
    meta = meta_json(folder)
    if meta.get("schema") != SCHEMA:
        raise UserError(f"{Path(folder) / META}: results schema {meta.get('schema')} is not the schema {SCHEMA} this "
                        "linbench reads")
    return meta


def _csv(path: Path, repair: bool = False, **options) -> pd.DataFrame | None:
    """A CSV file of the run folder, or a one-line error saying what is wrong with it."""
    remedy = f"; move it away and finish the run with: linbench run --resume {path.parent}"
    try:
        return pd.read_csv(path, **{"keep_default_na": True, **options})
    except FileNotFoundError:
        if repair:
            return None
        raise UserError(f"{path}: missing") from None
    except OSError as e:
        raise os_error(e, path, "read") from None
    except pd.errors.EmptyDataError:
        if repair:
            return None
        raise UserError(f"{path}: empty{remedy}") from None
    except (ValueError, pd.errors.ParserError) as e:  # UnicodeDecodeError included: a binary file
        raise UserError(f"{path}: not a linbench CSV file ({e.__class__.__name__}){remedy}") from None


def read_results(folder: Path, repair: bool = False, unfinished: list | None = None) -> pd.DataFrame:
    """results.csv, validated: its columns, and numbers where numbers belong (text there is a one-line
    error). With ``repair`` (``--resume``): only the finished rows (see :func:`finished`), typed as if
    the others had never been written, so a kept row is written back byte for byte; the axis values of
    each row left out are appended to ``unfinished`` (the caller tells the run's cells from others')."""
    path = Path(folder) / RESULTS
    frame = _csv(path, repair)
    if frame is None:
        return pd.DataFrame(columns=COLUMNS)
    frame = _checked(frame, path, repair)
    if repair:
        mask = [finished(r) for r in frame.to_dict("records")]
        if unfinished is not None:
            unfinished += [tuple(r[a] for a in AXES) for r, done in zip(frame.to_dict("records"), mask) if not done]
        text = _csv(path, dtype=str, keep_default_na=False).loc[mask]  # rows (a bare [] would pick columns)
        frame = _checked(pd.read_csv(io.StringIO(text.to_csv(index=False)), keep_default_na=True), path, repair)
    return frame


def implicit_axes(row: dict) -> dict:
    """The axes a row lacks or leaves empty that have an implicit value (an axis added later), with it."""
    return {a: AXIS[a].implicit for a in AXES if AXIS[a].implicit is not None
            and (a not in row or (isinstance(row[a], float) and math.isnan(row[a])))}


def later_axes(frame: pd.DataFrame) -> pd.DataFrame:
    """An axis added after a run was written (or left empty) reads its implicit value (world_size: 1, precision:
    fp32); a numeric axis's values as numbers, a named one's as they are."""
    for a in AXES:
        implicit = AXIS[a].implicit
        if implicit is not None:
            values = frame[a] if a in frame.columns else pd.Series(None, index=frame.index, dtype=object)
            if not isinstance(implicit, str):
                values = pd.to_numeric(values, errors="coerce")
            frame[a] = values.where(values.notna() & values.astype(str).ne(""), implicit).astype(type(implicit))
    return frame


def _checked(frame: pd.DataFrame, path: Path, repair: bool) -> pd.DataFrame:
    later_axes(frame)
    for c in LATER_COLUMNS:
        if c not in frame.columns:
            frame[c] = math.nan
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    for c in NUMERIC:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = frame[c].notna() & values.isna()
        if bad.any() and not repair:
            i = int(bad.to_numpy().argmax())
            raise UserError(f"{path}: column {c} holds text ({frame[c].iloc[i]!r}, line {i + 2}); the folder is "
                            f"damaged: finish it again with: linbench run --resume {path.parent}")
        if bad.any():
            frame.loc[bad, "status"] = "damaged"
        frame[c] = values
    frame["reason"] = frame["reason"].astype(object).where(frame["reason"].notna(), "")
    frame["status"] = frame["status"].astype(object).where(frame["status"].notna(), "")
    return frame


def read_samples(folder: Path) -> pd.DataFrame | None:
    """The run's raw samples (:data:`SAMPLE_COLUMNS`), or None for a run folder from before they were kept."""
    path = Path(folder) / SAMPLES
    frame = _csv(path, repair=True)
    if frame is None:
        return None
    later_axes(frame)
    missing = [c for c in SAMPLE_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce")
    return frame


class Run:
    """One run folder read back: results, metadata, gate and (when present) curves and predictions."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: no such run folder")
        self.meta = read_meta(self.folder)
        self.results = read_results(self.folder)
        self.id = self.meta.get("run_id", self.folder.name)
        self.gate = self._optional(GATE)
        self.curves = self._optional(CURVES)
        self.predictions = self._optional(PREDICTIONS)
        self.samples = read_samples(self.folder)

    def _optional(self, name) -> pd.DataFrame | None:
        path = self.folder / name
        try:
            return pd.read_csv(path, keep_default_na=True) if path.exists() else None
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            return None
