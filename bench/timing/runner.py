"""The benchmark runner: the equal-results gate, then every cell of the grid timed honestly.

Per cell: end-to-end training throughput over an epoch (or a stated sample cap), compute-only step
time on batches already on the device, loader-only epoch time, peak memory, achieved GFLOP/s and
GB/s against the device's peaks probed in the same run, and the speedup over the seeds' pipeline.
Results are rewritten atomically after every cell, so an interrupted run keeps what it finished and
``--resume`` completes it.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import torch

import impls
from bench import UserError
from bench.gate import check
from bench.grid import DEFAULT_GRID, QUICK_GRID, Cell, expand, gate_label, skip_reason, validate
from bench.ranks import distributed
from bench.runs import interrupt
from bench.runs import shard as sharding
from bench.runs.meta import environment, probe_peaks
from bench.runs.run_folder import CURVES, GATE, SCHEMA
from bench.runs.status import Status
from bench.runs.store import Store, empty_row
from bench.runs.summary import wrapped
from bench.timing.cell import CellBench, Settings
from bench.timing.machine_load import DISTURBED, machine_load
from bench.timing.rows import timed_row
from impls.models import MODELS


@dataclass
class RunConfig:
    grid: list[dict]
    overrides: dict = field(default_factory=dict)
    repeats: int = 3
    quick: bool = False
    gate_steps: int = 50
    seed: int = 0
    persistent_workers: bool = True
    pin_memory: bool | None = None
    data_dir: str | None = None
    curves_epochs: int = 10
    seconds: float = 1.0  # after its `repeats`, a cell's epochs (and loader passes) until +-3% or this many seconds


BESIDE_EPOCHS = 40  # curve epochs from which a run trains them beside the gate (a process costs seconds to start)


def compile_log(form) -> list[dict] | None:
    """The form's compilations so far (see the form contract), or None for a form that does not compile."""
    log = getattr(form, "compile_log", None)
    return log() if log else None


class Runner:
    def __init__(self, config: RunConfig, store: Store, progress: bool = True):
        self.config, self.store, self.progress = config, store, progress
        self.loader_cache: dict[tuple, tuple] = {}
        self.trained: dict | None = None  # curves trained beside the gate (bench.curves.Beside)
        self.compile_logs: dict[tuple, object] = {}

    # -- one cell ---------------------------------------------------------------------------
    def row(self, cell: Cell, status: str, reason: str = "", **values) -> dict:
        return empty_row({"threads": torch.get_num_threads(), **cell.as_dict()}, status, reason, **values)

    def measure(self, cell: Cell) -> tuple[dict, dict]:
        """The cell timed: its results row, and its raw samples (metric -> seconds per epoch or step)."""
        if impls.distributed(cell.model, cell.form):  # its ranks time it
            return self.timed_row(cell, distributed.time_cell(cell, Settings.of(self.config)), None, cap=None)
        bench = CellBench(cell, Settings.of(self.config))
        try:
            eager_steps = getattr(bench.form, "eager_steps", lambda: 0)  # steps that ran no compiled graph
            compiled_before, eager_before = len(compile_log(bench.form) or []), eager_steps()
            timed = bench.timings()
            # the loader alone depends on the data, not on the model or form: every cell of one loader shares it
            key = (cell.spec.data, *(v for a, v in cell.as_dict().items() if a not in ("model", "form")), bench.cap)
            if key not in self.loader_cache:
                self.loader_cache[key] = bench.loader_epoch_s()
            timed.loader = self.loader_cache[key]
            log = compile_log(bench.form)
            if log is not None:
                self.compile_logs[cell.gate_key()] = bench.form.compile_log
                eager = eager_steps() - eager_before
                timed.extra.update(eager=bool(eager or not log))
                if eager or not log:  # a compiling form that ran eager code: flagged, not timed as compiled
                    timed.extra.setdefault("notes", []).append(
                        f"EAGER: {eager} of the cell's steps ran no compiled graph" if eager else
                        "EAGER: nothing compiled (torch.compile made no graph); timed as eager code")
            return self.timed_row(cell, timed, log[compiled_before:] if log is not None else None, bench.cap)
        finally:
            bench.close()  # a DataLoader's workers end with the cell, however it ends

    def timed_row(self, cell: Cell, timed, compiles: list | None, cap) -> tuple[dict, dict]:
        """A results row and the raw samples from a cell's timings (:func:`bench.timing.rows.timed_row`)."""
        return timed_row(cell, timed, compiles, cap, self.store.meta["peaks"][torch.device(cell.device).type])

    # -- the run ----------------------------------------------------------------------------
    def gate(self, cells: list[Cell]) -> dict[tuple, str]:
        """The equal-results gate for each gate key (:meth:`Cell.gate_key`: model, form, device, precision, ...)
        about to be timed, at every batch size it is timed at; returns the failures. On ``--resume`` the keys
        already gated are kept."""
        cfg = self.config
        rows = check.gate_cells(cells, self.store.meta.get("gate", []), cfg.gate_steps, cfg.seed, cfg.data_dir,
                                ranks=distributed.check_cases)
        self.store.meta["gate"] = rows
        self.store.write_table(GATE, pd.DataFrame(rows))
        return check.failures(rows)

    def record_compiles(self) -> None:
        """Every compilation so far per gate key (its label), with its batch size and seconds."""
        logs = self.store.meta.setdefault("compiles", {})
        for key, log in self.compile_logs.items():
            logs[gate_label(key)] = log()

    def say(self, line: str) -> None:
        """A stage line on stderr, with the progress bars (not with ``--no-progress``)."""
        if self.progress:
            print(f"linbench: {line}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, dynamic_ncols=True, mininterval=1)

    # -- the run's lifecycle: prepare, measure, finish (linbench run, and ab's workers) ------------------
    def prepare(self, cells: list[Cell]) -> dict[tuple, tuple[Status, str]]:
        """Before any clock: each cell's skip reason, the peaks of each device in each precision timed, the load
        at the start, the gate of every gate key to be timed. Returns cell key -> (status, reason) of every
        cell not to be timed (skipped, or its form failed the gate)."""
        meta = self.store.meta
        skips = {c.key(): skip_reason(c) for c in cells}
        timed = [c for c in cells if not skips[c.key()]]
        for device in dict.fromkeys(c.device for c in timed):
            precisions = dict.fromkeys(c.precision for c in timed if c.device == device)
            meta.setdefault("peaks", {}).setdefault(device, probe_peaks(device, self.config.quick, precisions))
        if "load_at_start" not in meta:
            meta["load_at_start"] = machine_load()
            if meta["load_at_start"]["others"] > DISTURBED:
                load = meta["load_at_start"]
                print(*wrapped(f"linbench: warning: the machine is busy (others use {load['others']:.0%} of its CPU, "
                               f"load average {load['loadavg']} on {load['cores']} cores): timed blocks will be "
                               "re-measured or marked disturbed"), sep="\n", file=sys.stderr)
        self.say(f"gate: {len({c.gate_key() for c in timed})} form(s) against the fp64 oracle, then timing")
        from bench.curves import beside  # the curves trained beside the gate, in before the first clock starts

        failures, self.trained = beside(self.curves_beside(timed), lambda: self.gate(timed))
        self.store.write()
        return {c.key(): (Status.SKIPPED, skips[c.key()]) if skips[c.key()] else
                (Status.FAILED_EQUIVALENCE, failures[c.gate_key()]) for c in cells
                if skips[c.key()] or c.gate_key() in failures}

    def attempt(self, cell: Cell) -> tuple[dict, dict | None]:
        """One cell measured: its row and samples; a form that crashes is an ``error`` row (a result), while a
        signal or Ctrl-C is not a result and propagates (the cell is left to ``--resume``)."""
        try:
            row, samples = self.measure(cell)
            interrupt.check()  # a signal the cell's code swallowed: still not a result
            return row, samples
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as e:  # noqa: BLE001 - a form that crashes while timed is a result
            interrupt.raise_if_interrupted(e)  # e.g. its DataLoader workers killed by the same SIGTERM
            return self.row(cell, Status.ERROR, f"{e.__class__.__name__}: {e}".splitlines()[0]), None

    def finish(self, cells: list[Cell]) -> pd.DataFrame:
        """After the clock: the training curves, whether every cell is in, the folder written."""
        self.curves(cells)
        self.store.meta["complete"] = all(c.key() in self.store.rows for c in cells)
        self.store.write()
        return self.store.frame()

    def run(self, cells: list[Cell]) -> pd.DataFrame:
        todo = [c for c in cells if c.key() not in self.store.rows]  # on --resume: what is left
        untimed = self.prepare(todo)
        # timed work only: a skipped cell takes no time
        bar = self.bar(sum(untimed.get(c.key(), ("",))[0] != Status.SKIPPED for c in todo), "timing", "cell")
        for cell in todo:
            samples = None
            if cell.key() in untimed:
                row = self.row(cell, *untimed[cell.key()])
            else:
                bar.set_postfix_str(cell.label())
                row, samples = self.attempt(cell)
            if row["status"] != Status.SKIPPED:
                bar.update(1)
            self.store.put(row, samples)
            self.record_compiles()
            self.store.write()
        bar.close()
        return self.finish(cells)

    def curves_beside(self, timed: list[Cell]):
        """The training curves of the classifier forms about to be timed, started in a process beside the gate
        (:class:`bench.curves.Beside`), or None (no curves wanted, or already in the folder)."""
        from bench.curves import Beside, classifier_keys

        keys, epochs = classifier_keys(c.gate_key() for c in timed), self.config.curves_epochs
        if len(keys) * epochs < BESIDE_EPOCHS or (self.store.folder / CURVES).exists():
            return None  # none, or too few to pay for a process of their own: trained at the end
        self.say(f"training curves of {len(keys)} classifier form(s) beside the gate")
        return Beside(keys, self.config.curves_epochs, self.config.seed, self.config.data_dir)

    def curves(self, cells: list[Cell]) -> None:
        """Training curves and predictions of the run's classifiers' forms (skipped when already there)."""
        from bench.curves import record_curves

        if self.config.curves_epochs and not (self.store.folder / CURVES).exists():
            record_curves(self.store, self.config.curves_epochs, self.config.seed, self.config.data_dir, self.say,
                          self.bar, self.trained)


def plan(overrides: dict, quick: bool = False, repeats: int | None = None, curves: bool = True,
         **options) -> RunConfig:
    """A run's config: the default grid, or ``quick``'s (fewer cells, measured the same way, a 10-step
    gate, 2 epochs of curves); ``overrides`` (axis -> values) replace axes in every sub-grid. Bad values
    are one-line user errors."""
    validate(overrides)
    if repeats is not None and repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    from bench.data import data_problem

    data_problem(overrides.get("model") or MODELS, options.get("data_dir"))  # said before anything runs
    return RunConfig(grid=QUICK_GRID if quick else DEFAULT_GRID, overrides=overrides,
                     repeats=repeats or 3, quick=quick, gate_steps=10 if quick else 50,
                     curves_epochs=(2 if quick else 10) if curves else 0, **options)


def start(config: RunConfig, out: Path, run_id: str | None = None, progress: bool = True,
          shard: tuple[int, int] | None = None) -> tuple[Store, list[Cell]]:
    """A new run folder under ``out`` and its cells: the grid's, or with ``shard`` (I, N) that shard's."""
    import datetime as dt

    env = environment()
    run_id = run_id or dt.datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{env['commit'][:7]}" if env["commit"] else "")
    meta = {"schema": SCHEMA, "run_id": run_id, "env": env, "config": asdict(config), "complete": False}
    cells = expand(config.grid, config.overrides)
    if shard:
        meta["shard"], cells = sharding.record(cells, *shard)
        meta["run_id"] += sharding.suffix(*shard)
    store = Store.create(Path(out), meta)
    return store, cells


def resume(folder: Path) -> tuple[Store, RunConfig, list[Cell]]:
    """A run folder to finish, locked: its own config and cells, and only the finished rows of those cells
    (rows of any other grid, or cut short, are dropped; samples go with their rows)."""
    store = Store.load(Path(folder))
    try:
        config, cells = config_of(store.meta, Path(folder))
        if "shard" in store.meta:  # a shard's own cells only
            cells = sharding.cells_of(store.meta["shard"], cells, Path(folder) / "meta.json")
        dropped = store.keep({c.key(): c.as_dict() for c in cells})
    except BaseException:
        store.unlock()
        raise
    if dropped:
        print(f"linbench: warning: dropped {dropped} row(s) not of this run's grid", file=sys.stderr)
    return store, config, cells


def config_of(meta: dict, folder: Path) -> tuple[RunConfig, list[Cell]]:
    """The run config meta.json records, checked: a key this version does not know is refused (another
    version's setting, which this one would not apply), but for a retired one left unset (``threads``, now an axis)."""
    path, known = folder / "meta.json", {f.name for f in fields(RunConfig)}
    given = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if unknown := sorted(k for k, v in given.items() if k not in known and not (k == "threads" and v is None)):
        raise UserError(f"{path}: its config has key(s) this linbench does not know: {', '.join(unknown)} "
                        "(written by another version?); finish it with that version, or start a new run")
    try:
        config = RunConfig(**{k: v for k, v in meta["config"].items() if k in known})
        if not (config.grid and isinstance(config.grid, list) and int(config.repeats) == config.repeats > 0):
            raise ValueError("no grid, or no repeats")
        validate(config.overrides)
        cells = expand(config.grid, config.overrides)
    except Exception as e:  # noqa: BLE001 - a hand-edited config can fail in any way; say which file
        raise UserError(f"{path}: its config is not a linbench run config "
                        f"({e.__class__.__name__}: {e}); start a new run instead") from None
    return config, cells


def execute(store: Store, config: RunConfig, cells: list[Cell], progress: bool = True) -> pd.DataFrame:
    """Run ``cells`` into ``store``; Ctrl-C or SIGTERM keeps every finished cell and raises KeyboardInterrupt
    (a cell they cut short, its DataLoader workers or ranks killed by the same signal, is not written)."""
    # the seeds' 4 workers on a 2-core machine are part of what is measured, not a mistake to warn of
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    try:
        with interrupt.handled():
            return Runner(config, store, progress).run(cells)
    finally:
        try:
            store.write()
        finally:
            store.unlock()
