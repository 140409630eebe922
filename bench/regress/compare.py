"""``linbench compare A B``: two finished runs compared cell by cell from their raw samples (the rule is
:mod:`bench.regress.verdicts`'s, the same as ``linbench ab``'s); exit 1 when a cell is slower."""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench import UserError
from bench.regress.verdicts import compare_runs, counts, environment_differences, summary
from bench.runs.run_folder import Run
from bench.runs.store import write_atomic
from bench.runs.tables import fmt, show


def _row_text(r: dict) -> dict:
    interval = f" [{fmt(r['ratio_lo'])}, {fmt(r['ratio_hi'])}]" if math.isfinite(r["ratio_lo"]) else ""
    return {**r, "ratio [lo, hi]": fmt(r["ratio"]) + interval, "level": r["level"],
            "disturbed": "yes" if r["disturbed"] else ""}


TABLE = ["cell", "metric", "n_a", "n_b", "median_a", "median_b", "ratio [lo, hi]", "level", "verdict", "disturbed",
         "reason"]


def cmd_compare(args) -> int:
    """``linbench compare A B``: what differs, the verdicts, a summary; exit 1 when a cell is slower."""
    if not 0 <= args.min_effect < 1:
        raise UserError(f"--min-effect must be at least 0 and below 1, got {args.min_effect}")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    a, b = Run(args.a), Run(args.b)
    frame = compare_runs(a, b, args.min_effect, args.alpha)
    env = environment_differences(a, b)
    if args.out:
        try:
            write_atomic(Path(args.out), frame.to_csv(index=False))
        except OSError as e:
            raise UserError(f"cannot write {args.out}: {e.strerror or e}") from None
    if args.format == "json":
        print(json.dumps({"a": a.id, "b": b.id, "environment": env, "counts": counts(frame),
                          "cells": json.loads(frame.to_json(orient="records"))}, indent=2))
    else:
        print(f"A: {a.id} ({a.folder})\nB: {b.id} ({b.folder})")
        print("\n".join(f"differs: {line}" for line in env) or "environments: no difference recorded")
        print(show([_row_text(r) for r in frame.to_dict("records")], TABLE))
        print(summary(frame))
    return 1 if (frame["verdict"] == "slower").any() else 0


def add_parser(subparsers):
    """The ``compare`` subcommand on ``subparsers`` (argparse's), running :func:`cmd_compare`."""
    p = subparsers.add_parser("compare", help="per cell, is run B slower, faster or the same as run A? "
                              "(from raw samples; exit 1 when a cell is slower)")
    p.add_argument("a", metavar="A", help="the run compared against (e.g. before a change)")
    p.add_argument("b", metavar="B", help="the run judged (e.g. after it)")
    p.add_argument("--min-effect", type=float, default=0.05,
                   help="smallest change of the median time that counts (default: 0.05, 5%%)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="the chance of any false slower/faster verdict over all the comparisons (Holm; default 0.05)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", metavar="FILE.csv", help="also write every row (with each verdict's reason) as CSV")
    p.set_defaults(func=cmd_compare)
    return p
