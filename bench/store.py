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

import errno
import io
import itertools
import json
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.folder import LOCK, Lock, clean_temporaries, meta_json, os_error, umask, write_atomic  # noqa: F401 - write_atomic: public here
from bench.grid import AXES, AXIS

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
    "compile_s", "eager", "peak_rss_mb", "rss_growth_mb", "cuda_peak_mb", "gflops", "gbps", "roofline_frac",
    "epoch_roofline_frac", "speedup", "speedup_lo", "speedup_hi", "threads",
    "samples_per_s_per_rank", "scaling_eff", "allreduce_frac", "setup_s",  # distributed cells (ddp)
    "machine",  # the host that timed the cell, in a merged run (linbench merge); empty in a run of one machine
]))
# columns an older run folder may lack (read back as NaN): the axes, status and reason are required
LATER_COLUMNS = ("epoch_s_lo", "epoch_s_hi", "step_ms_lo", "step_ms_hi", "load", "disturbed", "speedup_lo",
                 "speedup_hi", "rss_growth_mb", "samples_per_s_per_rank", "scaling_eff", "allreduce_frac", "setup_s",
                 "machine", "eager")
DONE = ("ok", "skipped", "failed-equivalence", "error")
# what an "ok" row cannot lack: a row cut short after its status is not a finished cell
MEASURED = ("samples", "samples_per_s", "epoch_s", "n", "step_ms", "loader_epoch_s")
NUMERIC = [c for c in COLUMNS if c not in ("status", "reason", "noisy", "disturbed", "eager", "machine")
           and not (c in AXIS and AXIS[c].parse is str)]


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
        self.lock: Lock | None = None  # held from create/load until :meth:`unlock`

    @classmethod
    def create(cls, out: Path, meta: dict) -> Store:
        """A new run folder ``out/<run_id>`` (``.2``, ``.3``, ... when taken), locked, with its whole
        meta.json: made under a hidden name and renamed into place, it appears resumable or not at all."""
        out, base = Path(out), meta["run_id"]
        try:
            out.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=out, prefix=".new-run."))
            os.chmod(tmp, 0o777 & ~umask())
        except OSError as e:
            raise os_error(e, out, "write results under") from None
        lock = Lock(tmp).acquire()
        try:
            for n in itertools.count(1):
                name = base if n == 1 else f"{base}.{n}"
                if (out / name).exists():
                    continue
                meta["run_id"] = name
                write_atomic(tmp / META, json.dumps(meta, indent=2, default=str))
                try:
                    os.rename(tmp, out / name)  # atomic: two runs in one second cannot share a folder
                    break
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise os_error(e, out / name, "write results under") from None
        except BaseException:
            lock.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        store = cls(out / name, meta)
        store.lock, lock.path = lock, out / name / LOCK
        return store

    @classmethod
    def load(cls, folder: Path) -> Store:
        """A run folder to finish, locked: only its finished rows (a row cut short or holding text where a
        number belongs is left to be re-run) and their samples. The caller keeps those of its own grid."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such run folder")
        meta = read_meta(folder)
        lock = Lock(folder).acquire()
        try:
            clean_temporaries(folder)
            frame = read_results(folder, repair=True)
            rows = {row_key(r): r for r in frame.to_dict("records") if finished(r)}
            samples: dict[tuple, list] = {}
            frame = read_samples(folder)
        except BaseException:
            lock.release()
            raise
        for r in frame.sort_values("repeat").to_dict("records") if frame is not None else []:
            if row_key(r) in rows and isinstance(r["seconds"], float) and not math.isnan(r["seconds"]):
                samples.setdefault((row_key(r), r["metric"]), []).append(r["seconds"])
        store = cls(folder, meta, rows, samples)
        store.lock = lock
        return store

    def keep(self, cells: dict) -> int:
        """Keep only the rows (and samples) of ``cells`` (key -> axis values, which the kept rows take
        as they are typed); return how many rows were dropped."""
        dropped = sum(k not in cells for k in self.rows)
        self.rows = {k: {**r, **cells[k]} for k, r in self.rows.items() if k in cells}
        self.samples = {k: v for k, v in self.samples.items() if k[0] in cells}
        return dropped

    def unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def put(self, row: dict, samples: dict | None = None) -> None:
        """A cell's row, and its raw samples (metric -> seconds) when it was timed."""
        row = {**row, **_implicit(row)}  # an axis the row predates (or leaves empty): its implicit value
        self.rows[row_key(row)] = row
        for metric, seconds in (samples or {}).items():
            self.samples[(row_key(row), metric)] = list(seconds)

    def samples_frame(self) -> pd.DataFrame:
        rows = [{**dict(zip(AXES, key)), "metric": metric, "repeat": i, "seconds": v}
                for (key, metric), values in self.samples.items() for i, v in enumerate(values)]
        return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)

    def frame(self) -> pd.DataFrame:
        from bench.distributed import add_scaling
        from bench.report.analysis import add_speedup

        return add_scaling(add_speedup(pd.DataFrame(list(self.rows.values()), columns=COLUMNS), self.samples_frame()))

    def write(self) -> None:
        write_atomic(self.folder / SAMPLES, self.samples_frame().to_csv(index=False))
        write_atomic(self.folder / RESULTS, self.frame().to_csv(index=False))
        write_atomic(self.folder / META, json.dumps(self.meta, indent=2, default=str))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        write_atomic(self.folder / name, frame.to_csv(index=False))


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


def read_results(folder: Path, repair: bool = False) -> pd.DataFrame:
    """results.csv, validated: its columns, and numbers where numbers belong (text there is a one-line
    error). With ``repair`` (``--resume``): only the finished rows (see :func:`finished`), typed as if
    the others had never been written, so a kept row is written back byte for byte."""
    path = Path(folder) / RESULTS
    frame = _csv(path, repair)
    if frame is None:
        return pd.DataFrame(columns=COLUMNS)
    frame = _checked(frame, path, repair)
    if repair:
        mask = [finished(r) for r in frame.to_dict("records")]
        text = _csv(path, dtype=str, keep_default_na=False)[mask]
        frame = _checked(pd.read_csv(io.StringIO(text.to_csv(index=False)), keep_default_na=True), path, repair)
    return frame


def _implicit(row: dict) -> dict:
    """The axes a row lacks or leaves empty that have an implicit value (an axis added later), with it."""
    return {a: AXIS[a].implicit for a in AXES if AXIS[a].implicit is not None
            and (a not in row or (isinstance(row[a], float) and math.isnan(row[a])))}


def _later_axes(frame: pd.DataFrame) -> None:
    """An axis added after a run was written (or left empty) reads its implicit value (world_size: 1)."""
    for a in AXES:
        implicit = AXIS[a].implicit
        if implicit is not None:
            values = pd.to_numeric(frame[a], errors="coerce") if a in frame.columns else pd.Series(index=frame.index)
            frame[a] = values.fillna(implicit).astype(type(implicit))


def _checked(frame: pd.DataFrame, path: Path, repair: bool) -> pd.DataFrame:
    _later_axes(frame)
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
    _later_axes(frame)
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
