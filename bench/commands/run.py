"""``linbench run``: the benchmark grid (the main job) into a run folder, its summary, and its report."""
from __future__ import annotations

import argparse
import sys

from bench import UserError
from bench.commands import require_devices
from bench.commands.report import target_flag
from bench.runs.folder import os_error


def _run_settings(args, axes):
    """(flag, value, default) of every flag of ``run`` that sets what a run measures."""
    yield from ((a.flag, getattr(args, a.dest), None) for a in axes)
    yield from (("--quick", args.quick, False), ("--repeats", args.repeats, None),
                ("--no-curves", args.no_curves, False), ("--no-persistent-workers", args.no_persistent_workers, False),
                ("--pin-memory", args.pin_memory, None), ("--data-dir", args.data_dir, None),
                ("--out", args.out, "results"), ("--shard", args.shard, None))


def cmd_run(args) -> int:
    from pathlib import Path

    from bench.grid import AXIS_TABLE, axis_overrides, gate_key, gate_label
    from bench.report.analysis import derived, headlines
    from bench.runs.run_folder import RESULTS
    from bench.timing import runner

    if args.resume:
        given = [flag for flag, value, default in _run_settings(args, AXIS_TABLE) if value != default]
        if given:
            raise UserError(f"--resume finishes a run with its own settings; {', '.join(given)} cannot change "
                            "them (start a new run instead)")
        store, config, cells = runner.resume(Path(args.resume))
    else:
        from bench.runs.shard import parse

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
    from bench.runs.summary import compact, wide, width, wrapped

    frame = derived(frame, store.samples_frame())
    for line in wide(frame) if args.wide else compact(frame, width()):
        print(line)
    for line in headlines(frame):
        print(*wrapped(line), sep="\n")
    for row in frame.to_dict("records"):
        if row["status"] in ("failed-equivalence", "error"):
            print(*wrapped(f"{row['status'].upper()} {gate_label(gate_key(row))}: {row['reason']}"), sep="\n")
    print(f"results: {store.folder / RESULTS}")
    if not args.no_report:
        from bench.report.page import Run, build

        if not args.no_progress:
            print("linbench: writing the report", file=sys.stderr)
        out = Path(args.report_dir) / store.folder.name
        try:
            print(f"report: {build([Run(store.folder)], out, target_accuracy=args.target_accuracy)}")
        except (UserError, OSError) as e:  # the results are kept: a report problem is said, not fatal
            e = os_error(e, out, "write the report under") if isinstance(e, OSError) else e
            print(f"linbench: report not written: {e}", file=sys.stderr)
    return 1 if (frame["status"].isin(["failed-equivalence", "error"])).any() else 0


def add_parser(sub) -> None:
    from bench.grid import add_axis_flags

    p = sub.add_parser("run", help="the benchmark grid (the main job); results under --out")
    p.add_argument("--quick", action="store_true",
                   help="a small grid measured like the default one (about 1.5 minutes on 2 quiet cores)")
    add_axis_flags(p)
    p.add_argument("--repeats", type=int,
                   help="timed epochs per cell at least (default 3; more until the median is known to +-3%%, "
                        "within 1 s)")
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
    target_flag(p)
    p.add_argument("--wide", action="store_true", help="the summary with every column (default: the key columns, "
                   "within the terminal's width)")
    p.add_argument("--report-dir", default="reports", help="folder for reports (default: reports)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_run)
