"""``linbench ab REV_A REV_B``: two revisions timed interleaved on this machine, and the verdict per cell.

Each revision is a git worktree under ``.linbench/ab/<sha>`` (a clean one is reused), timed by worker
processes of its own (bench/ab_worker.py, run by this environment's python with cwd and PYTHONPATH = the
worktree: each side runs its own code), a fresh pair every round. Per round every cell is timed A B B A,
so load and drift hit both sides alike. The verdicts (bench.regress.compare's rule) judge one value per slot, the
median of its samples. ``results/ab-<a>-<b>-<time>/`` holds both run folders (``A``, ``B``, the slots'
samples pooled), ``compare.csv``, ``calibration.json`` for an A/A (one revision on both sides), the
workers' stderr (``A.log``, ``B.log``) and ``report/``. Exit 1 on a ``slower`` verdict or a cell B fails
and A does not.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from bench import UserError
from bench.regress.ab_worker import PROTOCOL, WORKER_MODULES, Worker, worker_path

SLOT = {"seconds": 0.0, "step_seconds": 0.0}  # a slot: --repeats epochs and loader passes, 5 step passes
ROUNDS, REPEATS = 3, 1
ORDER = "ABBA"
SHOWN = ["cell", "metric", "n_a", "n_b", "median_a", "median_b", "ratio", "ratio_lo", "ratio_hi", "p_value", "verdict"]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise UserError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """The full commit ``rev`` names, checked to hold the worker that times it."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode or not proc.stdout.strip():
        raise UserError(f"{rev!r} is not a revision of {repo}")
    sha = proc.stdout.strip()
    if not any(subprocess.run(["git", "cat-file", "-e", f"{sha}:{worker_path(Path(), name)}"], cwd=repo,
                              capture_output=True).returncode == 0 for name in WORKER_MODULES):
        raise UserError(f"{rev} ({sha[:12]}) predates bench/ab_worker.py: linbench ab cannot time it")
    return sha


def worktree(repo: Path, sha: str) -> Path:
    """``.linbench/ab/<sha>``, checked out at ``sha``: an existing clean one is reused."""
    path = repo / ".linbench" / "ab" / sha[:12]
    if path.exists():
        found = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=path, capture_output=True,
                               text=True).stdout.split()
        if found != [str(path), sha]:
            raise UserError(f"{path} exists but is not a worktree at {sha[:12]}: remove it "
                            f"(git worktree remove --force {path}; or rm -rf it and git worktree prune)")
        if _git(path, "status", "--porcelain", "--untracked-files=no"):
            raise UserError(f"{path} has local changes, so it would not time {sha[:12]}: "
                            f"git worktree remove --force {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "worktree", "prune")
    _git(repo, "worktree", "add", "--detach", str(path), sha)
    return path


def interleave(workers: dict, labels: list[str], r: int, rounds: int, errors: dict[str, str]) -> None:
    """Round ``r``: every cell timed in the order A B B A; a cell that errors (side: why, into ``errors``) is
    not timed again."""
    for i, label in [(i, label) for i, label in enumerate(labels) if label not in errors]:
        print(f"round {r + 1}/{rounds}, cell {i + 1}/{len(labels)}: {label} {' '.join(ORDER)}", file=sys.stderr)
        for side in ORDER:
            reply = workers[side].ask(cmd="measure", cell=label)
            if reply["status"] != "ok":
                errors[label] = f"{side}: {reply['reason']}"
                break


def ab(args) -> int:
    from bench.grid import axis_overrides, validate

    overrides = axis_overrides(args)
    validate(overrides)
    if args.rounds < 1 or args.repeats < 1:
        raise UserError(f"--rounds and --repeats must be >= 1, got {args.rounds} and {args.repeats}")
    if not (0 < args.min_effect < 1 and 0 < args.alpha < 1):
        raise UserError(f"--min-effect and --alpha must be between 0 and 1, got {args.min_effect} and {args.alpha}")
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    shas = {"A": resolve(repo, args.rev_a), "B": resolve(repo, args.rev_b)}
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        print("linbench: note: uncommitted changes are not timed: ab times committed revisions", file=sys.stderr)
    trees = {side: worktree(repo, sha) for side, sha in shas.items()}
    warn_if_busy(overrides.get("threads"))
    name, n = f"ab-{shas['A'][:7]}-{shas['B'][:7]}-{dt.datetime.now():%Y%m%d-%H%M%S}", 1
    while (folder := Path(args.out).resolve() / (name + (f".{n}" if n > 1 else ""))).exists():
        n += 1
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot write results under {args.out}: {e.strerror or e}") from None
    config = {"overrides": overrides, "quick": args.quick, "repeats": args.repeats, "curves": False,
              "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}
    revs = {"A": args.rev_a, "B": args.rev_b}
    print(f"ab {folder}: A = {args.rev_a} ({shas['A'][:12]}), B = {args.rev_b} ({shas['B'][:12]})", file=sys.stderr)
    workers, errors, started = {}, {}, {}
    try:
        for r in range(args.rounds):  # a fresh pair of workers every round: a process's own luck (its memory
            # layout, say) is then not one side's for the whole comparison
            workers = {side: Worker(side, trees[side], folder / f"{side}.log") for side in "AB"}
            if r:
                for side in "AB":
                    workers[side].ask(cmd="start", run=started[side]["run"], slot=SLOT)
            else:
                started = {side: workers[side].ask(
                    cmd="start", out=str(folder), run_id=side, config=config, slot=SLOT,
                    ab={"side": side, "rev": revs[side], "sha": shas[side], "other": shas["B" if side == "A" else "A"],
                        "rounds": args.rounds, "order": ORDER}) for side in "AB"}
                for side, reply in started.items():
                    if reply.get("protocol") != PROTOCOL:
                        raise UserError(f"{revs[side]} speaks worker protocol {reply.get('protocol')}, not {PROTOCOL}")
                cells = {side: {c["label"]: c for c in started[side]["cells"]} for side in "AB"}
                labels = [label for label, c in cells["A"].items()
                          if c["status"] == "ok" and cells["B"].get(label, {}).get("status") == "ok"]
                failing, notes = differences(cells)
                if not labels:
                    raise UserError("no cell can be timed on both sides"
                                    + "".join(f" ({w})" for w in (failing + notes)[:1]))
            interleave(workers, labels, r, args.rounds, errors)
            for w in workers.values():
                w.close(complete=r == args.rounds - 1)
    except KeyboardInterrupt:
        print(f"linbench: interrupted; what was timed is kept in {folder}", file=sys.stderr)
        return 130
    finally:
        for w in workers.values():
            w.close()
    for label, why in errors.items():
        (failing if why.startswith("B") else notes).append(f"{label}: error in {why}")
    return summarize(folder, args, shas, failing, notes)


def warn_if_busy(threads) -> None:
    """Cells at more than one torch thread share the cores with whatever keeps the machine busy: said."""
    import torch

    from bench.machine_load import DISTURBED, machine_load

    others, most = machine_load()["others"], max(threads or [torch.get_num_threads()])
    if others > DISTURBED and most > 1:
        print(f"linbench: warning: the machine is busy (others use {others:.0%} of its CPU): cells at {most} torch "
              "threads wait on the busy cores and time erratically; --threads 1 is steadier", file=sys.stderr)


def differences(cells: dict) -> tuple[list[str], list[str]]:
    """In words: the cells B fails (the gate) and A does not; the cells only one side has."""
    failing, notes = [], []
    for label, b in cells["B"].items():
        a = cells["A"].get(label)
        if a is None:
            notes.append(f"{label}: only in B")
        elif b["status"] == "failed-equivalence" and a["status"] != "failed-equivalence":
            failing.append(f"{label}: B fails the equal-results gate ({b['reason']})")
    return failing, notes + [f"{label}: only in A" for label in cells["A"] if label not in cells["B"]]


def summarize(folder: Path, args, shas: dict, failing: list[str], notes: list[str]) -> int:
    """compare.csv, the table, what differs, the A/A calibration and the report; the exit status."""
    from bench.regress.ab_worker import slot_medians
    from bench.regress.verdicts import compare_runs, environment_differences, summary
    from bench.run_folder import Run
    from bench.store import write_atomic
    from bench.tables import show

    a, b = Run(folder / "A"), Run(folder / "B")
    frame = compare_runs(slot_medians(a), slot_medians(b), args.min_effect, args.alpha)
    write_atomic(folder / "compare.csv", frame.to_csv(index=False))
    print(f"A: {args.rev_a} ({shas['A'][:12]}) {a.folder}\nB: {args.rev_b} ({shas['B'][:12]}) {b.folder}")
    print("\n".join(f"differs: {line}" for line in environment_differences(a, b)) or "environments: no difference")
    print(show(frame.to_dict("records"), SHOWN))
    print(summary(frame) + "; n: slots (each a median of its samples; `linbench compare A B` tests the samples)")
    if shas["A"] == shas["B"]:
        print(calibrate(folder, frame, args))
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


def calibrate(folder: Path, frame, args) -> str:
    """An A/A's calibration.json (every verdict not ``same`` counted against the rule), and its line."""
    from bench.store import write_atomic

    done = frame[frame["metric"].astype(str) != ""]
    by = {v: int((done["verdict"] == v).sum()) for v in ("slower", "faster", "inconclusive", "same")}
    m, k = len(done), len(done) - by["same"]
    cal = {"cells": int(done["cell"].nunique()), "comparisons": m, "non_same": k, "false_positive_rate": k / m if m
           else None, **by, "significant": by["slower"] + by["faster"], "disturbed": int(done["disturbed"].sum()),
           **{a: getattr(args, a) for a in ("rounds", "repeats", "min_effect", "alpha", "quick")}, "slot": SLOT}
    write_atomic(folder / "calibration.json", json.dumps(cal, indent=2))
    return (f"A/A calibration: {k} of {m} comparisons were not `same` ({by['slower']} slower, {by['faster']} faster, "
            f"{by['inconclusive']} inconclusive): false-positive rate {k}/{m}"
            + (f" = {k / m:.0%}" if m else "") + f" ({folder / 'calibration.json'})")


# -- the command line -----------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``ab`` subcommand on ``subparsers`` (``func``: :func:`ab`, returning the exit status)."""
    from bench.grid import add_axis_flags

    p = subparsers.add_parser("ab", help="two revisions timed interleaved (A B B A); exit 1 when B is slower",
                              description="Two revisions timed interleaved on this machine, and a verdict per cell.")
    p.add_argument("rev_a", metavar="REV_A", help="the base revision (e.g. main)")
    p.add_argument("rev_b", metavar="REV_B", help="the revision to judge (e.g. HEAD)")
    p.add_argument("--quick", action="store_true", help="the quick grid")
    add_axis_flags(p, metavar="LIST")
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"timed epochs and loader passes per cell and slot (default {REPEATS})")
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"A B B A rounds per cell (default {ROUNDS})")
    p.add_argument("--min-effect", type=float, default=0.05, help="the smallest change that counts (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05, help="the rank test's significance level (default 0.05)")
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
