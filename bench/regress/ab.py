"""``linbench ab REV_A REV_B``: two revisions timed in paired rounds on this machine, and the verdict per cell.

Each revision is a git worktree under ``.linbench/ab/<sha>`` (a clean one is reused), timed by worker processes
of its own (bench/regress/ab_worker.py, run by this environment's python with cwd and PYTHONPATH = the worktree:
each side runs its own code), a fresh pair every round. Per round every open cell gets a slot on each side,
their timed blocks taking turns A B B A, so load and drift hit both sides alike; rounds are added until every
verdict is settled or the cell's budget is spent (:mod:`bench.regress.rounds`), and the verdicts judge the
per-round ratios together (Holm, :func:`bench.regress.stats.decide`). ``results/ab-<a>-<b>-<time>/`` holds
both run folders (``A``, ``B``, the slots' samples pooled), ``compare.csv``, ``calibration.json`` for an A/A,
the workers' stderr (``A.log``, ``B.log``) and ``report/``. Exit 1 on a ``slower`` verdict or a cell B fails
and A does not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import UserError
from bench.regress.revisions import git, resolve, worktree
from bench.regress.rounds import judge, measure, new_folder

ROUNDS, MAX_ROUNDS, REPEATS, BUDGET = 4, 60, 6, 180.0  # rounds at least and at most; seconds per cell
SHOWN = ["cell", "metric", "rounds", "median_a", "median_b", "ratio", "ratio_lo", "ratio_hi", "level", "verdict"]


def ab(args) -> int:
    from bench.grid import FRONT_END_THREADS, axis_overrides, validate

    overrides = axis_overrides(args)
    if not overrides.get("threads"):  # one torch thread, as asv's and pytest-benchmark's cells: other counts
        overrides["threads"] = list(FRONT_END_THREADS)  # are cells of their own, asked for with --threads
    validate(overrides)
    check_flags(args)
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
    if args.calibrate:
        from bench.regress.calibration import calibrate_machine

        return calibrate_machine(args, repo, overrides)
    shas = {"A": resolve(repo, args.rev_a), "B": resolve(repo, args.rev_b)}
    if git(repo, "status", "--porcelain", "--untracked-files=no"):
        print("linbench: note: uncommitted changes are not timed: ab times committed revisions", file=sys.stderr)
    trees = {side: worktree(repo, sha) for side, sha in shas.items()}
    warn_if_busy(overrides.get("threads"))
    folder = new_folder(args.out, shas)
    try:
        failing, notes, took = measure(folder, trees, shas, overrides, args)
    except KeyboardInterrupt:
        print(f"linbench: interrupted; what was timed is kept in {folder}", file=sys.stderr)
        return 130
    return summarize(folder, args, shas, failing, notes, took)


def check_flags(args) -> None:
    if args.rounds < 2 or args.repeats < 1 or args.max_rounds < args.rounds:
        raise UserError(f"--rounds must be >= 2, --repeats >= 1 and --max-rounds >= --rounds, got {args.rounds}, "
                        f"{args.repeats} and {args.max_rounds}")
    if not (0 < args.min_effect < 1 and 0 < args.alpha < 1):
        raise UserError(f"--min-effect and --alpha must be between 0 and 1, got {args.min_effect} and {args.alpha}")
    if not args.budget > 0 or not args.plant >= 1:
        raise UserError(f"--budget must be > 0 and --plant >= 1, got {args.budget} and {args.plant}")
    if not args.calibrate and not (args.rev_a and args.rev_b):
        raise UserError("ab needs two revisions, REV_A and REV_B (or --calibrate N)")


def warn_if_busy(threads) -> None:
    """Cells at more than one torch thread share the cores with whatever keeps the machine busy: said."""
    import torch

    from bench.timing.machine_load import DISTURBED, machine_load

    others, most = machine_load()["others"], max(threads or [torch.get_num_threads()])
    if others > DISTURBED and most > 1:
        print(f"linbench: warning: the machine is busy (others use {others:.0%} of its CPU): cells at {most} torch "
              "threads wait on the busy cores and time erratically; --threads 1 is steadier", file=sys.stderr)


def summarize(folder: Path, args, shas: dict, failing: list[str], notes: list[str], took: float) -> int:
    """compare.csv, the table, what differs, the A/A record and the report; the exit status."""
    from bench.regress.calibration import record_aa
    from bench.regress.verdicts import environment_differences, summary
    from bench.runs.tables import show

    a, b, frame = judge(folder, args)
    print(f"A: {args.rev_a} ({shas['A'][:12]}) {a.folder}\nB: {args.rev_b} ({shas['B'][:12]}) {b.folder}")
    print("\n".join(f"differs: {line}" for line in environment_differences(a, b)) or "environments: no difference")
    print(show(frame.to_dict("records"), SHOWN))
    for r in frame[frame["verdict"] == "inconclusive"].to_dict("records"):
        print(f"inconclusive: {r['cell']} {r['metric']}: {r['reason']}")
    rounds = int(frame["rounds"].max()) if len(frame) else 0
    print(summary(frame) + f"; {rounds} round(s) at most, {took:.0f} s; ratios from paired rounds (A B B A), "
          f"errors controlled over the run (Holm, alpha {args.alpha:g})")
    if shas["A"] == shas["B"] and args.plant == 1:
        print(record_aa(folder, frame, args, took))
    for line in [*(f"note: {x}" for x in notes), *(f"FAILED {x}" for x in failing)]:
        print(line)
    if not args.no_report:
        from bench.report.page import build

        try:
            print(f"report: {build([a, b], folder / 'report')}")
        except Exception as e:  # noqa: BLE001 - the verdicts stand: a report problem is said, not fatal
            print(f"linbench: report not written: {e}", file=sys.stderr)
    print(f"compare: {folder / 'compare.csv'}")
    return 1 if failing or (frame["verdict"] == "slower").any() else 0


# -- the command line -----------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``ab`` subcommand on ``subparsers`` (``func``: :func:`ab`, returning the exit status)."""
    from bench.grid import add_axis_flags

    p = subparsers.add_parser("ab", help="two revisions timed interleaved (A B B A); exit 1 when B is slower",
                              description="Two revisions timed in paired rounds (A B B A) on this machine, rounds "
                              "added until every verdict is settled, and a verdict per cell and metric.")
    p.add_argument("rev_a", metavar="REV_A", nargs="?", help="the base revision (e.g. main)")
    p.add_argument("rev_b", metavar="REV_B", nargs="?", help="the revision to judge (e.g. HEAD)")
    p.add_argument("--quick", action="store_true", help="the quick grid")
    add_axis_flags(p, metavar="LIST")
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"timed epochs and loader passes per cell and slot (default {REPEATS})")
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help=f"A B B A rounds per cell at least, before any is judged settled (default {ROUNDS})")
    p.add_argument("--max-rounds", type=int, default=MAX_ROUNDS, help=f"rounds at most (default {MAX_ROUNDS})")
    p.add_argument("--budget", type=float, default=BUDGET,
                   help=f"seconds per cell: rounds are added until every verdict is settled or this is spent "
                        f"(default {BUDGET:g})")
    p.add_argument("--min-effect", type=float, default=0.05, help="the smallest change that counts (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="the chance of any false slower/faster verdict in the run (Holm; default 0.05)")
    p.add_argument("--plant", type=float, default=1.0, metavar="FACTOR",
                   help="slow B's every step by FACTOR with a busy wait (a change of known size; default 1: none)")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="measure this machine's verdicts instead: 2N A/A runs and N runs per --plants effect of REV_A "
                        "(default HEAD) against itself; writes their rates to --report-dir")
    p.add_argument("--plants", default="1.05,1.1,1.3", help="the effects --calibrate plants (default 1.05,1.1,1.3)")
    p.add_argument("--report-dir", default=None,
                   help="where --calibrate writes its report (default reports/calibration-<host>)")
    p.add_argument("--out", default="results", help="folder for the ab folder (default: results)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (or LINBENCH_DATA)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report of the comparison")
    p.set_defaults(func=ab)
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UserError(f"{message} (see '{self.prog} --help')")


def main(argv=None) -> int:
    """``python -m bench.regress.ab REV_A REV_B ...``: the same command without bench/cli.py."""
    try:
        parser = _Parser(prog="linbench")
        add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
        args = parser.parse_args(["ab", *(sys.argv[1:] if argv is None else argv)])
        return args.func(args)
    except (UserError, ValueError) as e:  # impls.UnknownName is a ValueError
        print(f"linbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("linbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
