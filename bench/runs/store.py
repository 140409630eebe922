"""The run folder as the runner writes it (:class:`Store`): its rows as measured, its samples and metadata, every
file written through :func:`write_atomic`, so a reader never sees half a file; ``--resume`` loads one. The
folder's format and its readers are :mod:`bench.runs.run_folder`'s.
"""
from __future__ import annotations

import errno
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from bench import UserError
from bench.grid import AXES
from bench.runs.folder import LOCK, Lock, clean_temporaries, meta_json, os_error, umask, write_atomic  # noqa: F401 - write_atomic: public here
from bench.runs.run_folder import (
    COLUMNS,
    META,
    RESULTS,
    SAMPLE_COLUMNS,
    SAMPLES,
    finished,
    implicit_axes,
    read_meta,
    read_results,
    read_samples,
)


def row_key(row: dict) -> tuple:
    return tuple(row[a] for a in AXES)


def empty_row(cell_values: dict, status: str, reason: str = "", **values) -> dict:
    """A results row: every column, NaN where not given."""
    row = {c: math.nan for c in COLUMNS}
    row.update(cell_values, status=status, reason=reason, **values)
    return row


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


class Store:
    """One run's folder as the runner writes it: the rows done so far and the metadata."""

    def __init__(self, folder: Path, meta: dict, rows: dict | None = None, samples: dict | None = None):
        self.folder, self.meta, self.rows = Path(folder), meta, rows or {}
        self.samples = samples or {}  # (cell key, metric) -> [seconds, ...]
        self.lock: Lock | None = None  # held from create/load until :meth:`unlock`
        self.unfinished: list[tuple] = []  # on load: the keys of rows left out as not finished

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
            unfinished: list[tuple] = []
            frame = read_results(folder, repair=True, unfinished=unfinished)
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
        store.lock, store.unfinished = lock, unfinished
        return store

    def keep(self, cells: dict) -> int:
        """Keep only the rows (and samples) of ``cells`` (key -> axis values, which the kept rows take
        as they are typed); return how many rows of other cells were dropped, counting those that were
        not finished either (a status of their own, cut short) but whose axes were whole."""
        dropped = sum(k not in cells for k in self.rows)
        dropped += sum(k not in cells and not any(_missing(v) for v in k) for k in self.unfinished)
        self.rows = {k: {**r, **cells[k]} for k, r in self.rows.items() if k in cells}
        self.samples = {k: v for k, v in self.samples.items() if k[0] in cells}
        return dropped

    def unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def put(self, row: dict, samples: dict | None = None) -> None:
        """A cell's row, and its raw samples (metric -> seconds) when it was timed."""
        row = {**row, **implicit_axes(row)}  # an axis the row predates (or leaves empty): its implicit value
        self.rows[row_key(row)] = row
        for metric, seconds in (samples or {}).items():
            self.samples[(row_key(row), metric)] = list(seconds)

    def samples_frame(self) -> pd.DataFrame:
        rows = [{**dict(zip(AXES, key)), "metric": metric, "repeat": i, "seconds": v}
                for (key, metric), values in self.samples.items() for i, v in enumerate(values)]
        return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)

    def frame(self) -> pd.DataFrame:
        """The rows as measured, one per cell (what a reader derives from them is the report's: speedups, scaling)."""
        return pd.DataFrame(list(self.rows.values()), columns=COLUMNS)

    def write(self) -> None:
        write_atomic(self.folder / SAMPLES, self.samples_frame().to_csv(index=False))
        write_atomic(self.folder / RESULTS, self.frame().to_csv(index=False))
        write_atomic(self.folder / META, json.dumps(self.meta, indent=2, default=str))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        write_atomic(self.folder / name, frame.to_csv(index=False))
