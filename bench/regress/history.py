"""``linbench history``: the change points of every series in asv's results, one line each (the analysis is
:mod:`bench.regress.change_points`'s; the report draws the same changes in its section "History")."""
from __future__ import annotations

import json
from pathlib import Path

from bench.regress.change_points import MIN_STEP, PENALTY, find_changes, table_columns
from bench.runs.folder import write_atomic
from bench.runs.tables import show


def cmd_history(args) -> int:
    """``linbench history``: the changes of level over asv's commits, one line each, and a summary; exit 0
    whatever was found (a report, not a gate: ``asv continuous`` and ``linbench compare`` are the gates)."""
    history = find_changes(args.results, args.min_step, args.penalty)
    if args.out:
        write_atomic(Path(args.out), history.changes.to_csv(index=False))
    if args.format == "json":
        print(json.dumps({"folder": str(history.folder), "summary": history.summary(), "skipped": history.skipped,
                          "changes": json.loads(history.changes.to_json(orient="records"))}, indent=2))
        return 0
    if len(history.changes):
        print(show(history.changes.to_dict("records"), table_columns(history.changes)))
    print(history.summary())
    return 0


def add_parser(subparsers):
    """The ``history`` subcommand on ``subparsers`` (argparse's), running :func:`cmd_history`."""
    p = subparsers.add_parser("history", help="change points over asv's results: where a benchmark's level moved, "
                              "at which commit and by how much (exit 0: a report)")
    p.add_argument("results", nargs="?", default=".asv/results", metavar="ASV_RESULTS_DIR",
                   help="asv's results folder (default: .asv/results)")
    p.add_argument("--min-step", type=float, default=MIN_STEP,
                   help=f"smallest change of level reported, |after/before - 1| (default: {MIN_STEP}, 5%%)")
    p.add_argument("--penalty", type=float, default=PENALTY,
                   help=f"penalty per change, times the noise and log(commits): higher finds fewer (default: "
                        f"{PENALTY})")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", metavar="FILE.csv", help="also write the changes as CSV")
    p.set_defaults(func=cmd_history)
    return p
