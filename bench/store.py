"""The run folder's one owner: its schema, file names and columns, reading it back and writing it.

A run folder ``results/<run-id>/`` holds ``results.csv`` (one row per cell, :data:`COLUMNS`),
``samples.csv`` (every timed repeat: the cell, ``metric`` (epoch, step, loader_epoch), ``repeat`` and
``seconds`` per epoch or per step), ``meta.json`` (schema, config, environment, probed peaks, the load
at the start, the gate, compilations), ``gate.csv`` and, when the run trained them, ``curves.csv`` and
``predictions.csv``. Every file is written through
:func:`write_atomic`, so a reader never sees half a file. The runner writes through :class:`Store`
(and ``--resume`` loads one); the report reads through :class:`Run`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES

SCHEMA = 1
RESULTS, META, GATE, CURVES, PREDICTIONS = "results.csv", "meta.json", "gate.csv", "curves.csv", "predictions.csv"
SAMPLES = "samples.csv"
SAMPLE_COLUMNS = [*AXES, "metric", "repeat", "seconds"]
# every axis, then the measurements; "threads" (torch's thread count in the cell) is recorded for every
# row, as its axis where the grid has one
COLUMNS = list(dict.fromkeys([
    *AXES, "status", "reason",
    "samples", "samples_per_s", "epoch_s", "epoch_s_lo", "epoch_s_hi", "epoch_s_iqr", "n", "noisy",
    "step_ms", "step_ms_lo", "step_ms_hi", "step_ms_iqr", "step_n", "loader_epoch_s", "loader_epoch_s_iqr",
    "loader_n", "load", "disturbed",
    "compile_s", "peak_rss_mb", "cuda_peak_mb", "gflops", "gbps", "roofline_frac", "epoch_roofline_frac",
    "speedup", "speedup_lo", "speedup_hi", "threads",
]))
# columns an older run folder may lack (read back as NaN): the axes, status and reason are required
LATER_COLUMNS = ("epoch_s_lo", "epoch_s_hi", "step_ms_lo", "step_ms_hi", "load", "disturbed", "speedup_lo",
                 "speedup_hi")
DONE = ("ok", "skipped", "failed-equivalence", "error")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def row_key(row: dict) -> tuple:
    return tuple(row[a] for a in AXES)


def empty_row(cell_values: dict, status: str, reason: str = "", **values) -> dict:
    """A results row: every column, NaN where not given."""
    row = {c: math.nan for c in COLUMNS}
    row.update(cell_values, status=status, reason=reason, **values)
    return row


class Store:
    """One run's folder as the runner writes it: the rows done so far and the metadata."""

    def __init__(self, folder: Path, meta: dict, rows: dict | None = None, samples: dict | None = None):
        self.folder, self.meta, self.rows = Path(folder), meta, rows or {}
        self.samples = samples or {}  # (cell key, metric) -> [seconds, ...]

    @classmethod
    def create(cls, out: Path, meta: dict) -> Store:
        folder, n = Path(out) / meta["run_id"], 1
        while folder.exists():
            n += 1
            folder = Path(out) / f"{meta['run_id']}.{n}"
        try:
            folder.mkdir(parents=True)
            write_atomic(folder / META, "{}")
        except OSError as e:
            raise UserError(f"cannot write results under {out}: {e.strerror or e}") from None
        meta["run_id"] = folder.name
        return cls(folder, meta)

    @classmethod
    def load(cls, folder: Path) -> Store:
        meta = read_meta(folder)
        rows = {row_key(r): r for r in read_results(folder).to_dict("records") if r["status"] in DONE}
        samples: dict[tuple, list] = {}
        frame = read_samples(folder)
        for r in frame.sort_values("repeat").to_dict("records") if frame is not None else []:
            if row_key(r) in rows:
                samples.setdefault((row_key(r), r["metric"]), []).append(r["seconds"])
        return cls(Path(folder), meta, rows, samples)

    def put(self, row: dict, samples: dict | None = None) -> None:
        """A cell's row, and its raw samples (metric -> seconds) when it was timed."""
        self.rows[row_key(row)] = row
        for metric, seconds in (samples or {}).items():
            self.samples[(row_key(row), metric)] = list(seconds)

    def samples_frame(self) -> pd.DataFrame:
        rows = [{**dict(zip(AXES, key)), "metric": metric, "repeat": i, "seconds": v}
                for (key, metric), values in self.samples.items() for i, v in enumerate(values)]
        return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)

    def frame(self) -> pd.DataFrame:
        from bench.report.analysis import add_speedup

        return add_speedup(pd.DataFrame(list(self.rows.values()), columns=COLUMNS), self.samples_frame())

    def write(self) -> None:
        write_atomic(self.folder / SAMPLES, self.samples_frame().to_csv(index=False))
        write_atomic(self.folder / RESULTS, self.frame().to_csv(index=False))
        write_atomic(self.folder / META, json.dumps(self.meta, indent=2, default=str))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        write_atomic(self.folder / name, frame.to_csv(index=False))


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (not a linbench run folder)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise UserError(f"{path}: results schema {meta.get('schema') if isinstance(meta, dict) else '?'} "
                        f"is not the schema {SCHEMA} this linbench reads")
    return meta


def read_results(folder: Path) -> pd.DataFrame:
    path = Path(folder) / RESULTS
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: unreadable ({e.__class__.__name__})") from None
    for c in LATER_COLUMNS:
        if c not in frame.columns:
            frame[c] = math.nan
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    frame["reason"] = frame["reason"].astype(object).where(frame["reason"].notna(), "")
    return frame


def read_samples(folder: Path) -> pd.DataFrame | None:
    """The run's raw samples (:data:`SAMPLE_COLUMNS`), or None for a run folder from before they were kept."""
    path = Path(folder) / SAMPLES
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: unreadable ({e.__class__.__name__})") from None
    missing = [c for c in SAMPLE_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
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
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            return None
