"""The ``linbench`` command: one line of error and exit status 2 for any user mistake."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import impls
from bench import UserError
from bench.folder import os_error
from bench.tables import show
from impls.models import ModelError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UserError(f"{message} (see '{self.prog} --help')")


def require_devices(devices) -> list[str]:
    """The device names, checked: unknown names and a CUDA request without a GPU are user errors."""
    devices = impls.check_names("device", devices, impls.DEVICES)
    if "cuda" in devices and (reason := impls.cuda_unavailable()):
        raise UserError(f"--devices cuda: {reason}")
    return devices


GATE_MEASURES = ["case", "batches", "status", "loss_max_abs", "param_max_abs", "predict_max_abs", "tol_used", "rtol",
                 "atol"]


def cmd_check(args) -> int:
    from bench.check import run_check
    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    from bench.grid import GATED, axis_overrides, gate_label, validate

    selection = {a: v for a, v in axis_overrides(args).items() if a in (*GATED, "batch_size")}
    validate(selection)
    require_devices(args.devices or ["cpu"])
    results = run_check(selection, steps=args.steps, data_dir=args.data_dir, batch_sizes=args.batch_sizes)
    rows = [r.as_dict() for r in results]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(show(rows, [*GATED, *GATE_MEASURES]))
        for r in results:
            if r.status != "pass":
                print(f"{r.status.upper()} {gate_label(r.key)}: {r.reason}")
        for reason in sorted({f"rtol {r.rtol:g} atol {r.atol:g}: {r.tolerance_reason}"
                              for r in results if r.tolerance_reason}):
            print(f"tolerance {reason}")
        print("tol_used: the worst |got - oracle| / (atol + rtol |oracle|) over losses, parameters and "
              "predict(); a case passes at <= 1")
    return 1 if any(r.status == "fail" for r in results) else 0


def _run_settings(args, axes):
    """(flag, value, default) of every flag of ``run`` that sets what a run measures."""
    yield from ((a.flag, getattr(args, a.dest), None) for a in axes)
    yield from (("--quick", args.quick, False), ("--repeats", args.repeats, None),
                ("--no-curves", args.no_curves, False), ("--no-persistent-workers", args.no_persistent_workers, False),
                ("--pin-memory", args.pin_memory, None), ("--data-dir", args.data_dir, None),
                ("--out", args.out, "results"), ("--shard", args.shard, None))


def cmd_run(args) -> int:
    from pathlib import Path

    from bench import runner
    from bench.grid import AXIS_TABLE, axis_overrides
    from bench.report.analysis import derived, headlines
    from bench.run_folder import RESULTS

    if args.resume:
        given = [flag for flag, value, default in _run_settings(args, AXIS_TABLE) if value != default]
        if given:
            raise UserError(f"--resume finishes a run with its own settings; {', '.join(given)} cannot change "
                            "them (start a new run instead)")
        store, config, cells = runner.resume(Path(args.resume))
    else:
        from bench.shard import parse

        shard = parse(args.shard) if args.shard is not None else None
        overrides = axis_overrides(args)
        config = runner.plan(overrides, quick=args.quick, repeats=args.repeats, curves=not args.no_curves,
                             persistent_workers=not args.no_persistent_workers, pin_memory=args.pin_memory,
                             data_dir=args.data_dir)
        if args.devices:
            require_devices(args.devices)
        store, cells = runner.start(config, Path(args.out), shard=shard)
    shard = store.meta.get("shard")
    print(f"run {store.folder} ({len(cells)} cells" + (f", shard {shard['index']}/{shard['count']} of a grid of "
          f"{shard['grid_cells']})" if shard else ")"), file=sys.stderr)
    try:
        frame = runner.execute(store, config, cells, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"linbench: interrupted; {len(store.rows)} of {len(cells)} cells kept in {store.folder}; "
              f"finish with: linbench run --resume {store.folder}", file=sys.stderr)
        return 130
    from bench.summary import compact, wide, width, wrapped

    frame = derived(frame, store.samples_frame())
    for line in wide(frame) if args.wide else compact(frame, width()):
        print(line)
    for line in headlines(frame):
        print(*wrapped(line), sep="\n")
    for row in frame.to_dict("records"):
        if row["status"] in ("failed-equivalence", "error"):
            print(*wrapped(f"{row['status'].upper()} {row['model']}/{row['form']}/{row['device']}: {row['reason']}"),
                  sep="\n")
    print(f"results: {store.folder / RESULTS}")
    if not args.no_report:
        from bench.report.page import Run, build

        if not args.no_progress:
            print("linbench: writing the report", file=sys.stderr)
        out = Path(args.report_dir) / store.folder.name
        try:
            print(f"report: {build([Run(store.folder)], out)}")
        except (UserError, OSError) as e:  # the results are kept: a report problem is said, not fatal
            e = os_error(e, out, "write the report under") if isinstance(e, OSError) else e
            print(f"linbench: report not written: {e}", file=sys.stderr)
    return 1 if (frame["status"].isin(["failed-equivalence", "error"])).any() else 0


def cmd_report(args) -> int:
    from pathlib import Path

    from bench.report.page import Run, build

    folders = args.runs
    if not folders:
        found = sorted((p for p in Path("results").glob("*") if (p / "meta.json").exists()
                        and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError("no results to report: give a run folder (none under results/)")
        folders = [found[-1]]
    if len(folders) > 2:
        raise UserError(f"give one run, or two to compare (got {len(folders)})")
    if not 0 < args.threshold < 1:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold}")
    runs = [Run(f) for f in folders]
    out = Path(args.out) if args.out else Path("reports") / (
        runs[-1].id if len(runs) == 1 else f"{runs[0].id}-vs-{runs[1].id}")
    try:
        print(build(runs, out, args.asv_results, args.pytest_benchmark, args.threshold, args.cross_machine))
    except OSError as e:
        raise os_error(e, out, "write the report under") from None
    return 0


def cmd_list(args) -> int:
    from bench.grid import AXIS, GATED, axis_overrides, setup_of, validate
    from bench.loaders import LOADERS

    chosen = {a: v for a, v in axis_overrides(args).items() if a in GATED and v}
    validate(chosen)
    # every model, form and device; another gated axis at its default values unless its flag names others
    axes = {a: chosen.get(a) or (AXIS[a].choices() if a in ("model", "form", "device") else AXIS[a].default())
            for a in GATED}
    rows = []
    for values in itertools.product(*axes.values()):
        key = dict(zip(GATED, values))
        reason = impls.unavailable(key["model"], key["form"], setup_of(values))
        rows.append(dict(key, available="no" if reason else "yes", reason=reason or ""))
    print(show(rows, [*GATED, "available", "reason"]))
    for a in GATED:
        if a not in ("model", "form", "device") and AXIS[a].choices:
            print(f"{a}s: {', '.join(map(str, AXIS[a].choices()))} ({AXIS[a].flag} to list others than "
                  f"{', '.join(map(str, axes[a]))})")
    print(f"loaders: {', '.join(LOADERS)} (workers apply to torchvision and tensor)")
    print(f"devices: cpu, cuda ({impls.cuda_unavailable() or 'available'})")
    return 0


def cmd_env(args) -> int:
    from bench.meta import environment

    for key, value in environment().items():
        print(f"{key:12} {value}")
    return 0


def cmd_data(args) -> int:
    from bench.data import fashion_mnist_root

    print(fashion_mnist_root(args.data_dir))
    return 0


def make_parser() -> argparse.ArgumentParser:
    from bench.counts import add_parser as add_counts
    from bench.grid import GATED, add_axis_flags
    from bench.merge import add_parser as add_merge
    from bench.profile import add_parser as add_profile
    from bench.regress.ab import add_parser as add_ab
    from bench.regress.compare import add_parser as add_compare
    from bench.regress.history import add_parser as add_history
    from bench.torchrun import add_parser as add_ranks

    parser = _Parser(prog="linbench", description="Benchmarks of d2l chapter 3 models written several ways.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("check", help="the equal-results gate against the fp64 oracle",
                       description="The equal-results gate against the fp64 oracle. By default every model and "
                       "form, on cpu, at the batch sizes the default grid times each at.")
    add_axis_flags(p, only=(*GATED, "batch_size"), says="what to check")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (or LINBENCH_DATA)")
    p.add_argument("--steps", type=int, default=50, help="full batches per case at most (default: 50)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("run", help="the benchmark grid (the main job); results under --out")
    p.add_argument("--quick", action="store_true",
                   help="a small grid measured like the default one (about 30 s on 2 quiet cores)")
    add_axis_flags(p)
    p.add_argument("--repeats", type=int,
                   help="timed epochs per cell at least (default 3; more until the median is known to +-3%%, "
                        "within 2 s)")
    p.add_argument("--no-persistent-workers", action="store_true", help="restart DataLoader workers every epoch")
    p.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="pin DataLoader memory (default: only when the device is cuda)")
    p.add_argument("--out", default="results", help="folder for run folders (default: results)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run")
    p.add_argument("--shard", metavar="I/N", help="run the I-th of N parts of the grid, split by expected time "
                   "(one per machine; join them with linbench merge)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-curves", action="store_true", help="skip the classifiers' training curves")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--wide", action="store_true", help="the summary with every column (default: the key columns, "
                   "within the terminal's width)")
    p.add_argument("--report-dir", default="reports", help="folder for reports (default: reports)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="tables and plots of runs (two runs: a comparison) as an HTML page")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders (default: the newest under results/)")
    p.add_argument("--asv-results", metavar="DIR", help="asv's results folder (e.g. .asv/results)")
    p.add_argument("--pytest-benchmark", nargs="+", default=[], metavar="JSON", help="--benchmark-json files")
    p.add_argument("--out", help="output folder (default: reports/<run-id>)")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="smallest relative change a comparison calls slower or faster (default 0.05)")
    p.add_argument("--cross-machine", action="store_true",
                   help="in a merged run, also compute speedups of cells timed on another machine than their "
                        "baseline cell: those compare different machines, not only the code")
    p.set_defaults(func=cmd_report)
    add_merge(sub)
    add_compare(sub)
    add_ab(sub)
    add_history(sub)
    add_counts(sub)
    add_profile(sub)
    add_ranks(sub)
    p = sub.add_parser("list", help="forms, loaders and devices available here, and why not")
    add_axis_flags(p, only=GATED, says="what to list")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("env", help="the environment a run records")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("data", help="find, validate and prepare Fashion-MNIST; print its torchvision root")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv=None) -> int:
    try:
        args = make_parser().parse_args(argv)
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe is met here, not at exit
        return status
    except (UserError, impls.UnknownName, ModelError) as e:
        print(f"linbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("linbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `linbench list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a file problem no caller foresaw: still one line, with the path
        print(f"linbench: error: {os_error(e, doing='use')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
