"""``linbench ranks CELL``: one distributed cell (ddp) timed by ranks that ``torchrun`` started, on one
node or several (``torchrun --nnodes N --rdzv-backend c10d``), into an ordinary run folder.

Every rank joins the group torchrun set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the rendezvous),
runs the equal-results gate of the cell's model with the cell's rank count, then, if it passed, the same
timing as ``linbench run`` (:func:`bench.ranks.distributed.time_cell`'s rank program). Rank 0 writes the run
folder under ``--out``: the cell's row, the gate, and in ``meta.json`` every rank's node (host, CPU,
GPU, torch, ``LOCAL_RANK``) as ``nodes``.
"""
from __future__ import annotations

import os

import pandas as pd
import torch
import torch.distributed as dist

import impls
from bench import UserError
from bench.grid import AXES, example_label, parse_label
from bench.ranks import distributed
from bench.runs.status import Status


def _environment() -> dict:
    from bench.runs.meta import environment

    return {"rank": dist.get_rank(), "local_rank": int(os.environ.get("LOCAL_RANK", 0)), **environment()}


def _agree(value):
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cmd_ranks(args) -> int:
    from bench.gate import check
    from bench.timing import runner
    from bench.timing.cell import Settings

    cell = parse_label(args.cell)
    if not impls.distributed(cell.model, cell.form):
        raise UserError(f"{args.cell}: {cell.form} is not a distributed form (e.g. ddp)")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError("linbench ranks runs under torchrun (RANK and WORLD_SIZE are not set); e.g. torchrun "
                        f"--standalone --nproc-per-node {cell.world_size} -m bench.cli ranks {args.cell}")
    if int(os.environ["WORLD_SIZE"]) != cell.world_size:
        raise UserError(f"{args.cell} is a cell of {cell.world_size} ranks; torchrun started "
                        f"{os.environ['WORLD_SIZE']}")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    setup_s = distributed.join(cell.threads, cell.device, local_rank, os.getppid())  # torchrun's agent: the tree
    try:
        return _ranks(args, cell, setup_s, check, runner, Settings)
    finally:
        dist.destroy_process_group()


def _ranks(args, cell, setup_s, check, runner, Settings) -> int:
    from bench.runs.meta import probe_peaks

    rank = dist.get_rank()
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, _environment())
    from bench.gate.cases import gate_cases

    cases = gate_cases(cell.spec, [cell.batch_size], args.steps, 0, args.data_dir)
    gate = distributed._check(setup_s, cell.gate_key(), cases)
    failures = _agree(check.failures([r.as_dict() for r in gate]))
    timed = None if failures else distributed._time(setup_s, cell, Settings(data_dir=args.data_dir))
    if rank != 0:
        return 0
    config = runner.plan({a: [v] for a, v in cell.as_dict().items() if a in AXES}, curves=False,
                         data_dir=args.data_dir)
    store, _ = runner.start(config, args.out)
    store.meta.update(nodes=nodes, peaks={torch.device(cell.device).type: probe_peaks(cell.device, True,
                                                                                      [cell.precision])})
    run = runner.Runner(config, store, progress=False)
    if failures:
        row, samples = run.row(cell, Status.FAILED_EQUIVALENCE, next(iter(failures.values()))), None
    else:
        row, samples = run.timed_row(cell, timed, None, None)
    store.meta["gate"] = [r.as_dict() for r in gate]
    store.write_table(runner.GATE, pd.DataFrame(store.meta["gate"]))
    store.put(row, samples)
    store.meta["complete"] = True
    store.write()
    store.unlock()
    hosts = sorted({n["host"] for n in nodes})
    print(f"{cell.label()}: {row['status']}, {row.get('samples_per_s', float('nan')):,.0f} samples/s on "
          f"{len(nodes)} ranks, {len(hosts)} node(s) ({', '.join(hosts)}); run {store.folder}")
    return 0 if row["status"] == Status.OK else 1


def add_parser(sub) -> None:
    p = sub.add_parser("ranks", help="one distributed cell (ddp) timed by the ranks torchrun started (one node or "
                                     "several); rank 0 writes the run folder")
    p.add_argument("cell", help=f"the cell's label, its k the ranks torchrun starts (e.g. {example_label(ranks=True)})")
    p.add_argument("--out", default="results", help="folder for run folders (default: results)")
    p.add_argument("--steps", type=int, default=50, help="full batches per gate case at most (default: 50)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_ranks)
