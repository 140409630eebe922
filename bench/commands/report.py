"""``linbench report``: the HTML report of one run, or of two compared (:mod:`bench.report.page`)."""
from __future__ import annotations

import argparse

from bench import UserError
from bench.runs.folder import os_error


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
        print(build(runs, out, args.asv_results, args.pytest_benchmark, args.threshold, args.cross_machine,
                    args.target_accuracy))
    except OSError as e:
        raise os_error(e, out, "write the report under") from None
    return 0


def _accuracy(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a test accuracy in (0, 1], got {text}")
    return value


def target_flag(p) -> None:
    p.add_argument("--target-accuracy", type=_accuracy, default=None,
                   help="the test accuracy time to accuracy is measured to (default: the book's accuracy of each "
                        "classifier less 0.02)")


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables and plots of runs (two runs: a comparison) as an HTML page")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders (default: the newest under results/)")
    p.add_argument("--asv-results", metavar="DIR", help="asv's results folder (e.g. .asv/results)")
    p.add_argument("--pytest-benchmark", nargs="+", default=[], metavar="JSON", help="--benchmark-json files")
    p.add_argument("--out", help="output folder (default: reports/<run-id>)")
    target_flag(p)
    p.add_argument("--threshold", type=float, default=0.05,
                   help="smallest relative change a comparison calls slower or faster (default 0.05)")
    p.add_argument("--cross-machine", action="store_true",
                   help="in a merged run, also compute speedups of cells timed on another machine than their "
                        "baseline cell: those compare different machines, not only the code")
    p.set_defaults(func=cmd_report)
