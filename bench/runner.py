"""The benchmark runner: the equal-results gate, then every cell of the grid timed honestly.

Per cell: end-to-end training throughput over an epoch (or a stated sample cap), compute-only step
time on batches already on the device, loader-only epoch time, peak memory, achieved GFLOP/s and
GB/s against the device's peaks probed in the same run, and the speedup over the seeds' pipeline.
Results are rewritten atomically after every cell, so an interrupted run keeps what it finished and
``--resume`` completes it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

import impls
from bench import UserError
from bench import check
from bench.grid import AXES, BASELINES, TRAIN_EXAMPLES, Cell, expand, sample_cap, skip_reason
from bench.loaders import make_loader
from bench.meta import environment, probe_peaks
from bench.timer import time_autorange, time_repeats
from impls.common import MODELS, init_params, step_cost

SCHEMA = 1
RESULTS, META, GATE = "results.csv", "meta.json", "gate.csv"
COLUMNS = [
    "model", "form", "device", "loader", "workers", "batch_size", "status", "reason",
    "samples", "samples_per_s", "epoch_s", "epoch_s_iqr", "n", "noisy",
    "step_ms", "step_ms_iqr", "step_n", "loader_epoch_s", "loader_epoch_s_iqr", "loader_n",
    "compile_s", "peak_rss_mb", "cuda_peak_mb", "gflops", "gbps", "roofline_frac", "epoch_roofline_frac",
    "speedup", "threads",
]
DONE = ("ok", "skipped", "failed-equivalence", "error")


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
    threads: int | None = None
    data_dir: str | None = None
    curves_epochs: int = 10


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def compile_log(form) -> list[dict] | None:
    """The form's compilations so far (see the form contract), or None for a form that does not compile."""
    log = getattr(form, "compile_log", None)
    return log() if log else None


def row_key(row: dict) -> tuple:
    return tuple(row[a] for a in AXES)


class Store:
    """One run's folder: ``results.csv`` (one row per cell), ``meta.json`` and ``gate.csv``."""

    def __init__(self, folder: Path, meta: dict, rows: dict | None = None):
        self.folder, self.meta, self.rows = folder, meta, rows or {}

    @classmethod
    def create(cls, out: Path, meta: dict) -> Store:
        folder, n = out / meta["run_id"], 1
        while folder.exists():
            n += 1
            folder = out / f"{meta['run_id']}.{n}"
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
        return cls(Path(folder), meta, rows)

    def put(self, row: dict) -> None:
        self.rows[row_key(row)] = row

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.rows.values()), columns=COLUMNS)
        return add_speedup(frame)

    def write(self) -> None:
        write_atomic(self.folder / RESULTS, self.frame().to_csv(index=False))
        write_atomic(self.folder / META, json.dumps(self.meta, indent=2, default=str))


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
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    frame["reason"] = frame["reason"].astype(object).where(frame["reason"].notna(), "")
    return frame


def baseline_rows(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    base = frame[frame["status"] == "ok"]
    for axis, value in BASELINES[model].items():
        base = base[base[axis] == value]
    return base


def add_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's samples/s over its model's baseline cell (the seeds' pipeline); NaN without one."""
    frame["speedup"] = math.nan
    for model in frame["model"].unique():
        base = baseline_rows(frame, model)
        if len(base):
            mine = frame["model"] == model
            frame.loc[mine, "speedup"] = frame.loc[mine, "samples_per_s"] / float(base["samples_per_s"].iloc[0])
    return frame


class CellBench:
    """One cell made ready to time: its loader, a fresh form from the seeded init, and passes.

    Every tool times the same things through it: the runner, asv and pytest-benchmark.
    A pass covers one epoch, or ``cap`` samples where the cell is capped (see ``grid.sample_cap``).
    """

    def __init__(self, cell: Cell, seed: int = 0, quick: bool = False, persistent_workers: bool = True,
                 pin_memory: bool | None = None, data_dir=None):
        self.cell, self.dev = cell, torch.device(cell.device)
        self.cap, self.total = sample_cap(cell, quick), TRAIN_EXAMPLES[cell.model]
        self.loader = make_loader(cell.loader, cell.model, cell.batch_size, cell.workers, cell.device, seed,
                                  persistent_workers, pin_memory, data_dir)
        self.form = impls.build(cell.model, cell.form, init_params(cell.model, seed), MODELS[cell.model].lr,
                                cell.device)
        self.samples = 0

    def batches(self):
        """One pass of batches, moved to the device."""
        seen, limit = 0, self.cap or self.total
        for X, y in self.loader:
            yield X.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            seen += len(y)
            if seen >= limit:
                return

    def train_pass(self) -> None:
        """End to end: load and step through one pass; ``samples`` counts what it covered."""
        self.samples = 0
        for X, y in self.batches():
            self.form.step(X, y)
            self.samples += len(y)

    def loader_pass(self) -> None:
        for _ in self.batches():
            pass

    def warm(self, steps: int = 3) -> None:
        """A few steps untimed: compilation, allocator and caches warm, workers started."""
        for _, (X, y) in zip(range(steps), self.batches()):
            self.form.step(X, y)

    def device_batches(self, count: int = 16) -> list:
        """The first ``count`` batches of a pass, already on the device (for compute-only timing)."""
        return [b for _, b in zip(range(count), self.batches())]

    def steps(self, batches) -> None:
        for X, y in batches:
            self.form.step(X, y)


class Runner:
    def __init__(self, config: RunConfig, store: Store, progress: bool = True):
        self.config, self.store, self.progress = config, store, progress
        self.loader_cache: dict[tuple, tuple] = {}
        self.compile_logs: dict[tuple, object] = {}

    # -- one cell ---------------------------------------------------------------------------
    def row(self, cell: Cell, status: str, reason: str = "", **values) -> dict:
        row = {c: math.nan for c in COLUMNS}
        row.update(cell.as_dict(), status=status, reason=reason, threads=torch.get_num_threads(), **values)
        return row

    def measure(self, cell: Cell) -> dict:
        cfg = self.config
        bench = CellBench(cell, cfg.seed, cfg.quick, cfg.persistent_workers, cfg.pin_memory, cfg.data_dir)
        if bench.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(bench.dev)
        rss_reset = reset_peak_rss()
        compiled_before = len(compile_log(bench.form) or [])
        bench.warm()
        e2e = time_repeats(bench.train_pass, cfg.repeats, bench.dev, warmup=0)
        samples = bench.samples
        peak_rss = peak_rss_mb() if rss_reset else math.nan
        cuda_peak = torch.cuda.max_memory_allocated(bench.dev) / 2**20 if bench.dev.type == "cuda" else math.nan

        resident = bench.device_batches()
        step = time_autorange(lambda: bench.steps(resident), 0.1 if cfg.quick else 0.3)
        step_s = step.median / len(resident)
        flops, bytes_ = step_cost(cell.model, sum(len(y) for _, y in resident) / len(resident))

        key = (cell.model, cell.loader, cell.workers, cell.batch_size, cell.device, bench.cap)
        if key not in self.loader_cache:
            self.loader_cache[key] = time_repeats(bench.loader_pass, cfg.repeats, bench.dev, warmup=1)
        load = self.loader_cache[key]

        scale = bench.total / samples
        peaks = self.store.meta["peaks"][bench.dev.type]
        epoch_flops, epoch_bytes = step_cost(cell.model, bench.total)
        roofline_epoch = max(epoch_flops / (peaks["gflops"] * 1e9), epoch_bytes / (peaks["gbps"] * 1e9))
        roofline_step = max(flops / (peaks["gflops"] * 1e9), bytes_ / (peaks["gbps"] * 1e9))
        log = compile_log(bench.form)
        compiles = log[compiled_before:] if log is not None else None
        if log is not None:
            self.compile_logs[(cell.model, cell.form, cell.device)] = bench.form.compile_log
        notes = []
        if compiles:
            notes.append(f"compiled {len(compiles)} time(s) during the cell, at batch size(s) "
                         + ", ".join(str(e["batch_size"]) for e in compiles))
        if bench.cap:
            notes.append(f"capped at {samples} samples per pass; epoch_s extrapolated")
        if e2e.noisy or step.noisy:
            notes.append("noisy (IQR >= 10% of median)")
        return self.row(
            cell, "ok", "; ".join(notes), samples=samples, samples_per_s=samples / e2e.median,
            epoch_s=e2e.median * scale, epoch_s_iqr=e2e.iqr * scale, n=e2e.n, noisy=e2e.noisy or step.noisy,
            step_ms=step_s * 1e3, step_ms_iqr=step.iqr / len(resident) * 1e3, step_n=step.n,
            loader_epoch_s=load.median * scale, loader_epoch_s_iqr=load.iqr * scale, loader_n=load.n,
            compile_s=sum(e["seconds"] for e in compiles) if compiles is not None else math.nan,
            peak_rss_mb=peak_rss, cuda_peak_mb=cuda_peak,
            gflops=flops / step_s / 1e9, gbps=bytes_ / step_s / 1e9,
            roofline_frac=roofline_step / step_s, epoch_roofline_frac=roofline_epoch / (e2e.median * scale),
        )

    # -- the run ----------------------------------------------------------------------------
    def gate(self, cells: list[Cell]) -> dict[tuple, str]:
        """The equal-results gate for each (model, form, device) about to be timed, at every batch size
        it is timed at; returns the failures. On ``--resume`` the triples already gated are kept."""
        cfg, rows = self.config, list(self.store.meta.get("gate", []))
        done = {(r["model"], r["form"], r["device"]) for r in rows}
        sizes: dict[tuple, set] = {}
        for c in cells:
            if (c.model, c.form, c.device) not in done:
                sizes.setdefault((c.model, c.form, c.device), set()).add(c.batch_size)
        for (model, form, device), batch_sizes in sizes.items():
            cases = check.gate_cases(model, batch_sizes, cfg.gate_steps, cfg.seed, cfg.data_dir)
            rows += [r.as_dict() for r in check.check_if_available(model, form, device, cases)]
        self.store.meta["gate"] = rows
        write_atomic(self.store.folder / GATE, pd.DataFrame(rows).to_csv(index=False))
        return check.failures(rows)

    def record_compiles(self) -> None:
        """Every compilation so far per (model, form, device), with its batch size and seconds."""
        logs = self.store.meta.setdefault("compiles", {})
        for (model, form, device), log in self.compile_logs.items():
            logs[f"{model}/{form}/{device}"] = log()

    def run(self, cells: list[Cell]) -> pd.DataFrame:
        from tqdm import tqdm

        meta = self.store.meta
        todo = [c for c in cells if c.key() not in self.store.rows]  # on --resume: what is left
        skips = {c.key(): skip_reason(c) for c in todo}
        timed = [c for c in todo if not skips[c.key()]]
        for device in dict.fromkeys(c.device for c in timed):
            meta.setdefault("peaks", {}).setdefault(device, probe_peaks(device, self.config.quick))
        failures = self.gate(timed)
        self.store.write()
        bar = tqdm(todo, desc="cells", unit="cell", disable=not self.progress, dynamic_ncols=True, mininterval=1)
        for cell in bar:
            bar.set_postfix_str(cell.label())
            if skips[cell.key()]:
                row = self.row(cell, "skipped", skips[cell.key()])
            elif (cell.model, cell.form, cell.device) in failures:
                row = self.row(cell, "failed-equivalence", failures[(cell.model, cell.form, cell.device)])
            else:
                try:
                    row = self.measure(cell)
                except (KeyboardInterrupt, UserError):
                    raise
                except Exception as e:  # noqa: BLE001 - a form that crashes while timed is a result
                    row = self.row(cell, "error", f"{e.__class__.__name__}: {e}".splitlines()[0])
            self.store.put(row)
            self.record_compiles()
            self.store.write()
        self.curves(cells)
        meta["complete"] = len(self.store.rows) >= len(cells)
        self.store.write()
        return self.store.frame()

    def curves(self, cells: list[Cell]) -> None:
        """Training curves and predictions of the run's softmax forms (skipped when already there)."""
        from bench.curves import train_curves
        from bench.report import CURVES, PREDICTIONS

        folder, epochs = self.store.folder, self.config.curves_epochs
        if not epochs or (folder / CURVES).exists():
            return
        ok = [r for r in self.store.rows.values() if r["status"] == "ok" and r["model"] == "softmax"]
        curves, predictions, skipped = [], [], {}
        for device in dict.fromkeys(r["device"] for r in ok):
            forms = list(dict.fromkeys(r["form"] for r in ok if r["device"] == device))
            c, p, s = train_curves(forms, device, epochs, self.config.seed, self.config.data_dir)
            curves.append(c), predictions.append(p)
            skipped.update({f"{form} on {device}": reason for form, reason in s.items()})
        if curves:
            write_atomic(folder / PREDICTIONS, pd.concat(predictions).to_csv(index=False))
            write_atomic(folder / CURVES, pd.concat(curves).to_csv(index=False))
            self.store.meta["curves_skipped"] = skipped


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def start(config: RunConfig, out: Path, run_id: str | None = None, progress: bool = True) -> tuple[Store, list[Cell]]:
    import datetime as dt

    env = environment()
    run_id = run_id or dt.datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{env['commit'][:7]}" if env["commit"] else "")
    meta = {"schema": SCHEMA, "run_id": run_id, "env": env, "config": asdict(config), "complete": False}
    store = Store.create(Path(out), meta)
    return store, expand(config.grid, config.overrides)


def resume(folder: Path) -> tuple[Store, RunConfig, list[Cell]]:
    store = Store.load(Path(folder))
    config = RunConfig(**store.meta["config"])
    return store, config, expand(config.grid, config.overrides)


def execute(store: Store, config: RunConfig, cells: list[Cell], progress: bool = True) -> pd.DataFrame:
    """Run ``cells`` into ``store``; Ctrl-C or SIGTERM keeps every finished cell and re-raises."""
    if config.threads:
        torch.set_num_threads(config.threads)
    # the seeds' 4 workers on a 2-core machine are part of what is measured, not a mistake to warn of
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return Runner(config, store, progress).run(cells)
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.write()


def headlines(frame: pd.DataFrame) -> list[str]:
    """The run's findings in words: the fastest form per model and device, and the loader ratio."""
    lines = []
    ok = frame[frame["status"] == "ok"]
    for (model, device), group in ok.groupby(["model", "device"], sort=False):
        best = group.loc[group["samples_per_s"].idxmax()]
        lines.append(f"fastest {model} on {device}: {best['form']} ({best['loader']}, w{best['workers']}, "
                     f"b{best['batch_size']}) {best['samples_per_s']:,.0f} samples/s, epoch {best['epoch_s']:.3g} s, "
                     f"{best['speedup']:.1f}x the seeds' pipeline, {100 * best['epoch_roofline_frac']:.2g}% of the roofline")
    loaders = ok[(ok["model"] == "softmax") & (ok["device"] == "cpu") & (ok["batch_size"] == 256)]
    tv = loaders[(loaders["loader"] == "torchvision") & (loaders["workers"] == 4)]["loader_epoch_s"]
    res = loaders[loaders["loader"] == "resident"]["loader_epoch_s"]
    if len(tv) and len(res):
        lines.append(f"softmax loader epoch on cpu: resident {res.min():.3g} s vs torchvision with 4 workers "
                     f"{tv.min():.3g} s ({tv.min() / res.min():,.0f}x)")
    for model in frame["model"].unique():
        if not len(baseline_rows(frame, model)):
            lines.append(f"no {model} speedups: its baseline cell ("
                         + ", ".join(f"{k}={v}" for k, v in BASELINES[model].items()) + ") is not in this run")
    return lines
