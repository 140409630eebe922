"""``linbench profile``: where a cell's training step spends its time, operator by operator (torch.profiler),
set against the roofline; written as ``profiles/<cell>/`` (``ops.csv``, ``summary.json``, ``trace.json``).

A cell is made ready and warmed by :class:`bench.timing.cell.CellBench` (the compiled form compiles there), stepped
once more over its batches, then ``steps`` steps on batches already on the device run under the profiler,
each inside a ``record_function("step")`` range. A form that owns its epoch on the resident loader (its
``train_epoch`` hook: every step of an epoch in one call) is profiled by its epochs instead: ``EPOCHS`` of them,
each in the range, the summary's ``unit`` "epoch" and its ``batch`` the epoch's samples, so every per-step
figure below is then per epoch. Definitions (times per step, averaged over the steps):

- an *operator* is a dispatcher op (``namespace::name``, e.g. ``aten::mm``; autograd's own ranges excepted)
  or a kernel the compiler generated and named (``cpp_fused_*``, ``triton_*``); everything else the profiler
  records (the step range, autograd's engine and node ranges, dynamo's and AOT's wrappers, the optimizer's
  annotations) is framework;
- ``step_us``: the mean CPU duration of the "step" ranges (under the profiler, so a little slower than
  ``step_plain_us``, the same batches timed without it, which the roofline multiple uses);
- ``operators_us``: the summed CPU duration of the *top-level* operators of the steps, those with no operator
  above them; an operator's duration covers the operators and runtime calls nested in it, so each
  microsecond is counted once (equal to the summed self times of all events inside operators);
- ``outside_us`` = the summed self CPU times of the non-operator events not inside an operator (the
  step range's own time, which is Python between calls, is ``python_us``; the rest, autograd's engine,
  dynamo's guards and wrappers, is ``framework_us``). By construction operators + outside = step, up
  to events that overhang their parent; the shares are of ``step_us``;
- on CUDA, ``device_us``: the kernels' time per step, and ``device_busy_share`` its share of the wall
  time of a step (the whole loop, synchronized, over the steps); the CPU shares are those of launching.

The per-operator table is ``prof.key_averages()``: calls per step, self CPU (and CUDA) us per step and
share of the step. Roofline: FLOPs and bytes of a step (``impls.models.step_cost``); with peaks (the run's
probed ones, or probed here), the roofline time of a step and the plain step's multiple of it.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench import UserError
from bench.grid import example_label
from bench.runs.run_folder import OP_COLUMNS, OPS, PROFILES, SUMMARY, TRACE
from bench.runs.summary import short

STEP = "step"  # the range around each profiled unit: a step, or an epoch of a form that owns its epoch
OUTSIDE = {"step": "Python and framework overhead", "epoch": "the form's own code between operators"}
EPOCHS = 2  # epochs profiled of a form that owns its epoch (its train_epoch: every step of a resident epoch at once)
_OPERATOR = re.compile(r"^(?!autograd::|torch::)\w+::\w+$|^(graph_\d+_)?cpp_fused_|^triton_")


def is_operator(name: str, annotation: bool = False) -> bool:
    """An operator, as defined in the module docstring (a user annotation never is)."""
    return not annotation and bool(_OPERATOR.match(name))


def _account(events) -> tuple[list, float, float, float, int]:
    """(the step ranges, operators us, outside us, python us, top-level operator calls), summed over the steps
    (the step ranges on the CPU: on CUDA, each also has a copy on the GPU's timeline)."""
    from torch.autograd import DeviceType

    roots = [e for e in events if e.name == STEP and e.cpu_parent is None and e.device_type == DeviceType.CPU]
    ops, calls, stack = 0.0, 0, list(roots)
    python = outside = sum(r.self_cpu_time_total for r in roots)
    while stack:
        for child in stack.pop().cpu_children:
            if is_operator(child.name, child.is_user_annotation):
                ops, calls = ops + child.cpu_time_total, calls + 1
            else:
                outside += child.self_cpu_time_total
                stack.append(child)
    return roots, ops, outside, python, calls


def _ops_frame(prof, steps: int, step_us: float, wall_us: float):
    import pandas as pd
    from torch.autograd import DeviceType

    rows = []
    for e in prof.key_averages():
        kind = ("kernel" if e.device_type != DeviceType.CPU else "step" if e.key == STEP
                else "operator" if is_operator(e.key, e.is_user_annotation) else "framework")
        device = e.self_device_time_total / steps if e.use_device else math.nan
        rows.append({"op": e.key, "kind": kind, "calls_per_step": e.count / steps,
                     "self_cpu_us": e.self_cpu_time_total / steps, "cpu_total_us": e.cpu_time_total / steps,
                     "self_device_us": device})
    frame = pd.DataFrame(rows, columns=OP_COLUMNS)
    frame["self_cpu_share"] = frame["self_cpu_us"] / step_us
    frame["device_share"] = frame["self_device_us"] / wall_us
    return frame.sort_values(["self_cpu_us", "self_device_us"], ascending=False, ignore_index=True)


def profile_cell(cell, steps: int = 20, seed: int = 0, data_dir=None, trace_path=None, peaks: dict | None = None):
    """Profile ``steps`` training steps of ``cell``: ``{"summary": dict, "ops": DataFrame}`` (see the module
    docstring for every number); ``trace_path``: a Chrome trace written there; ``peaks``: the device's probed
    ``gflops`` and ``gbps`` (None: no roofline time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from bench.runs.meta import roofline_s
    from bench.timing.cell import CellBench, Settings
    from bench.timing.timer import sync
    from impls.precision import PRECISIONS

    if cell.device == "cpu":  # kineto looks for a GPU even for a CPU-only profile, and says so on stderr
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    import torch._inductor.config as inductor

    with inductor.patch({"cpp.enable_kernel_profile": True}):  # the compiled form's kernels named in the profile
        bench = CellBench(cell, Settings(seed=seed, data_dir=data_dir))
        try:
            bench.warm()
            owns = bench.owns_epoch  # the form trains a resident epoch whole: its train_epoch is profiled
            steps = min(steps, EPOCHS) if owns else steps
            first = bench.device_batches(steps)
            batches = [first[i % len(first)] for i in range(steps)]
            bench.steps(batches)  # more warm steps, over these very batches
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.dev.type == "cuda" else [])
            with profile(activities=activities, record_shapes=False) as prof:
                start = time.perf_counter()
                for X, y in batches:
                    with record_function(STEP):
                        bench.train_pass() if owns else bench.form.step(X, y)
                sync(bench.dev)
                wall_us = (time.perf_counter() - start) * 1e6 / steps
            plain_us = bench.epoch_s().median * 1e6 if owns else bench.step_ms(batches).median * 1e3
        finally:
            bench.close()
    if trace_path is not None:
        prof.export_chrome_trace(str(trace_path))
    roots, ops, outside, python, calls = _account(prof.events())
    if len(roots) != steps:
        raise RuntimeError(f"the profile holds {len(roots)} step ranges, not {steps}")
    step_us = sum(r.cpu_time_total for r in roots) / steps
    batch = bench.total if owns else sum(len(y) for _, y in batches) / steps
    flops, bytes_ = cell.spec.cost(batch, PRECISIONS[cell.precision].storage.itemsize)
    device_us = sum(r.device_time_total for r in roots) / steps if bench.dev.type == "cuda" else math.nan
    peak_gflops = (peaks or {}).get(f"gflops_{cell.precision}", (peaks or {}).get("gflops", math.nan))
    roofline_us = roofline_s(cell.spec, batch, peaks, cell.precision) * 1e6 if peaks else math.nan
    summary = {"label": cell.label(), **cell.as_dict(), "unit": "epoch" if owns else "step", "steps": steps,
               "batch": batch, "step_us": step_us,
               "step_wall_us": wall_us, "step_plain_us": plain_us, "operators_us": ops / steps,
               "outside_us": outside / steps, "python_us": python / steps, "framework_us": (outside - python) / steps,
               "operators_share": ops / steps / step_us, "outside_share": outside / steps / step_us,
               "python_share": python / steps / step_us, "operator_calls": calls / steps,
               "device_us": device_us, "device_busy_share": device_us / wall_us, "flops": flops, "bytes": bytes_,
               "gflops": flops / plain_us / 1e3, "peak_gflops": peak_gflops,
               "peak_gbps": (peaks or {}).get("gbps", math.nan), "roofline_us": roofline_us,
               "x_roofline": plain_us / roofline_us, "torch": torch.__version__,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return {"summary": summary, "ops": _ops_frame(prof, steps, step_us, wall_us)}


def folder_name(label: str) -> str:
    """A cell's folder under ``profiles/``: its label with ``/`` as ``_``."""
    return label.replace("/", "_")


def best_cells(folder: Path) -> list:
    """The run's ok cell with the highest ``samples_per_s`` of each form, per model."""
    from bench.grid import AXES, Cell, parse_label
    from bench.runs.run_folder import read_results

    frame = read_results(folder)
    frame = frame[(frame["status"] == "ok") & frame["samples_per_s"].notna()]
    best = frame.loc[frame.groupby(["model", "form"], sort=False)["samples_per_s"].idxmax()]
    return [parse_label(Cell(**{a: r[a] for a in AXES}).label()) for r in best.to_dict("records")]


def _cells(args) -> list:
    from bench.grid import parse_label, skip_reason

    if args.best:
        if args.cells:
            raise UserError("--best picks the run's cells; give no CELL with it")
        cells = []
        for cell in best_cells(Path(args.run)):
            if why := skip_reason(cell):
                print(f"not profiled here: {cell.label()}: {why}", file=sys.stderr)
            else:
                cells.append(cell)
        if not cells:
            raise UserError(f"{args.run}: no timed cell of the run can run here")
        return cells
    cells = [parse_label(label) for label in args.cells]
    for cell in cells:
        if why := skip_reason(cell):
            raise UserError(f"{cell.label()} cannot run here: {why}")
    return cells


def line(s: dict) -> str:
    """The one-line verdict of a profile's summary."""
    unit = s.get("unit", "step")
    roofline = (f"roofline time {s['roofline_us']:.3g} us (the {unit} is {s['x_roofline']:,.0f}x it)"
                if not math.isnan(s["roofline_us"]) else "roofline time unknown (no probed peaks)")
    device = (f"; the GPU busy {s['device_busy_share']:.0%} of the wall time"
              if not math.isnan(s["device_busy_share"]) else "")
    return (f"{unit} {s['step_plain_us']:.4g} us ({s['step_us']:.4g} us profiled): {s['operators_share']:.0%} in "
            f"operators, {s['outside_share']:.0%} outside any operator ({OUTSIDE[unit]}){device}; "
            f"{roofline}")


def cmd_profile(args) -> int:
    from bench.runs.folder import Lock, os_error, write_atomic
    from bench.runs.tables import show

    if args.steps <= 0 or args.top <= 0:
        raise UserError(f"--steps and --top must be positive, got {args.steps} and {args.top}")
    if args.best and not args.run:
        raise UserError("--best picks the best cells of a run: give --run RUN_DIR")
    if not args.cells and not args.best:
        raise UserError(f"give one or more CELL labels (e.g. {example_label()}), or --run RUN_DIR --best")
    lock, peaks = None, {}
    if args.run:
        from bench.runs.run_folder import read_meta

        folder = Path(args.run)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such run folder")
        peaks, out = read_meta(folder).get("peaks") or {}, folder / PROFILES
    else:
        out = Path(args.out)
    cells = _cells(args)
    from bench.data import data_problem

    data_problem({c.model for c in cells}, args.data_dir)  # a data problem is said before anything runs
    if args.run:
        lock = Lock(folder).acquire()
    try:
        for cell in cells:
            if cell.device not in peaks and not args.run:
                from bench.runs.meta import probe_peaks

                peaks[cell.device] = probe_peaks(cell.device, True, [c.precision for c in cells])
            where = out / folder_name(cell.label())
            try:
                where.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise os_error(e, where, "write the profile under") from None
            print(f"profiling {cell.label()}: {args.steps} steps", file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:
                result = profile_cell(cell, args.steps, data_dir=args.data_dir, trace_path=Path(tmp) / TRACE,
                                      peaks=peaks.get(cell.device))
                write_atomic(where / TRACE, (Path(tmp) / TRACE).read_bytes())
            summary, ops = result["summary"], result["ops"]
            summary["peaks_from"] = "the run" if args.run else "probed here (quick)"
            write_atomic(where / OPS, ops.to_csv(index=False))
            write_atomic(where / SUMMARY, json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v
                                                     for k, v in summary.items()}, indent=2))  # NaN as null
            top = ops[ops["kind"] == "operator"].head(args.top).assign(op=lambda f: f["op"].map(short))
            print(f"\n{cell.label()}")
            print(show(top.to_dict("records"), ["op", "calls_per_step", "self_cpu_us", "self_cpu_share",
                                               *(["self_device_us", "device_share"] if cell.device == "cuda" else [])]))
            print(line(summary))
            print(f"profile: {where} (trace.json opens in chrome://tracing or ui.perfetto.dev)")
    finally:
        if lock is not None:
            lock.release()
    return 0


def add_parser(subparsers):
    """The ``profile`` subcommand on ``subparsers`` (argparse's), running :func:`cmd_profile`."""
    p = subparsers.add_parser("profile", help="torch.profiler view of cells' training steps: top operators, the "
                              "share outside any operator, the roofline time")
    p.add_argument("cells", nargs="*", metavar="CELL", help=f"cell labels, e.g. {example_label()}")
    p.add_argument("--steps", type=int, default=20, help="profiled steps per cell (default 20)")
    p.add_argument("--run", metavar="RUN_DIR", help="write into this run's profiles/ (its peaks give the roofline); "
                   "the report then shows them")
    p.add_argument("--best", action="store_true", help="with --run: the fastest cell (samples_per_s) of each form "
                   "per model, instead of CELLs")
    p.add_argument("--out", default=str(Path("results") / PROFILES), help="folder for the profiles without --run "
                   "(default results/profiles)")
    p.add_argument("--top", type=int, default=10, help="operators shown per cell (default 10)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_profile)
    return p
