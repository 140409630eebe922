"""``linbench counts``: instructions per training step, written with a run (``counts.csv``) and shown by its report.

The counting itself is :mod:`bench.signals.callgrind`'s. ``--run RUN`` counts the CPU cells a run timed and
writes them into its folder, so the report sets them next to ``step_ms``; without it, the grid flags
pick the cells (CPU, resident loader, one thread by default) and a new run folder holds their counts.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench import UserError
from bench.grid import AXES, Cell
from bench.runs.run_folder import COUNTS, counts_frame, read_counts
from bench.signals.callgrind import count_cells, one_thread, valgrind_missing


def _cells_of_run(folder: Path) -> list[Cell]:
    """The CPU cells a run timed, each once at one thread (loader and workers kept: they give the batches)."""
    from bench.runs.run_folder import read_results

    frame = read_results(folder)
    frame = frame[(frame["status"] == "ok") & (frame["device"] == "cpu")]
    return list(dict.fromkeys(one_thread(Cell(**{a: r[a] for a in AXES})) for r in frame.to_dict("records")))


def _target(args):
    """(run folder, its lock or None, the cells): ``--run``'s folder and CPU cells, or a new folder."""
    from bench.grid import DEFAULT_GRID, axis_overrides, expand, validate
    from bench.runs.run_folder import SCHEMA, read_meta
    from bench.runs.store import Lock, Store

    overrides = axis_overrides(args)
    if overrides["threads"] not in (None, [1]):
        raise UserError(f"--threads {','.join(map(str, overrides['threads']))}: instructions are counted at one "
                        "thread (leave --threads out)")
    if args.run:
        folder = Path(args.run)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such run folder")
        read_meta(folder)
        validate(overrides)
        lock = Lock(folder).acquire()
        wanted = {a: set(v) for a, v in overrides.items() if v and a != "threads"}  # grid flags narrow the run's cells
        return folder, lock, [c for c in _cells_of_run(folder)
                              if all(getattr(c, a) in values for a, values in wanted.items())]
    overrides.update(threads=[1], device=overrides["device"] or ["cpu"], loader=overrides["loader"] or ["resident"],
                     workers=overrides["workers"] or [0])
    validate(overrides)
    cells = expand(DEFAULT_GRID, overrides)
    from bench.data import data_problem

    data_problem({c.model for c in cells}, args.data_dir)  # a data problem is said before anything runs
    import datetime as dt

    from bench.runs.meta import environment

    env = environment()
    meta = {"schema": SCHEMA, "run_id": dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-counts", "env": env,
            "config": {"kind": "counts", "overrides": overrides, "steps": args.steps}, "complete": True}
    store = Store.create(Path(args.out), meta)
    store.write_table("results.csv", store.frame())  # no timed cell: the report says so, and shows the counts
    return store.folder, store.lock, cells


def cmd_counts(args) -> int:
    from bench.runs.folder import write_atomic
    from bench.runs.tables import show

    if why := valgrind_missing():
        raise UserError(why)
    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    folder, lock, cells = _target(args)
    try:
        print(f"counting {len(cells)} cells under callgrind, {args.jobs} at a time, into {folder / COUNTS}",
              file=sys.stderr)
        rows = count_cells(cells, args.steps, args.jobs, data_dir=args.data_dir,
                           done=lambda r: print(f"  {Cell(**{a: r[a] for a in r if a in AXES}).label()}: "
                                                f"{r['status']}", file=sys.stderr))
        old = read_counts(folder)
        frame = counts_frame(rows)
        if old is not None:  # counts of other cells, from an earlier call, are kept
            frame = counts_frame([*old[~old.set_index(list(AXES)).index.isin(
                frame.set_index(list(AXES)).index)].to_dict("records"), *rows])
        write_atomic(folder / COUNTS, frame.to_csv(index=False))
    finally:
        lock.release()
    print(show([_shown(r) for r in rows], ["model", "form", "batch_size", "status", "instr_per_step", "instr_spread",
                                           "count_steps", "count_s", "top_function"]))
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['status'].upper()} {r['model']}/{r['form']}/b{r['batch_size']}: {r['reason']}")
    print(f"counts: {folder / COUNTS} (at one torch thread; linbench report {folder} shows them)")
    return 1 if any(r["status"] == "error" for r in rows) else 0


def _shown(row: dict) -> dict:
    """A row for the terminal: whole instruction counts (a 0.5% change must show), the top function only."""
    if row["status"] != "ok":
        return row
    top = row["top_functions"].split("; ")[0]
    return {**row, "instr_per_step": f"{row['instr_per_step']:,.0f}", "instr_spread": f"{row['instr_spread']:.2%}",
            "count_s": f"{row['count_s']:.0f}", "top_function": top if len(top) <= 48 else top[:47] + "…"}


def add_parser(subparsers):
    """The ``counts`` subcommand on ``subparsers`` (argparse's), running :func:`cmd_counts`."""
    from bench.grid import add_axis_flags

    p = subparsers.add_parser("counts", help="instructions per training step under valgrind, CPU cells, one thread "
                              "(deterministic: a busy machine does not move them)")
    add_axis_flags(p)
    p.add_argument("--steps", type=int, default=16, help="steps per counted block (default 16; 2 for a form slow "
                   "per sample)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="cells counted at a time (default: the cores; valgrind runs one thread)")
    p.add_argument("--run", metavar="RUN_DIR", help="count the CPU cells this run timed (grid flags narrow them), "
                   "into its folder: the report then shows them next to step_ms")
    p.add_argument("--out", default="results", help="folder for the new run folder (without --run)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_counts)
    return p
