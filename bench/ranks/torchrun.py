"""``linbench ranks CELL``: one distributed cell (ddp) timed by ranks that ``torchrun`` started, on one
node or several (``torchrun --nnodes N --rdzv-backend c10d``), into an ordinary run folder.

Every rank joins the group torchrun set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the rendezvous). Rank 0
runs ``linbench run``'s lifecycle (:class:`bench.timing.runner.Runner`: prepare, attempt, finish) on the one cell
into a run folder under ``--out``; the gate (the cell's model with the cell's rank count) and the timing
(:func:`bench.ranks.distributed.time_cell`'s rank program) are collectives that every other rank joins in the same
order (:class:`OnRanks`). ``meta.json`` names every rank's node (host, CPU, GPU, torch, ``LOCAL_RANK``) as
``nodes``.
"""
from __future__ import annotations

import dataclasses
import os

import pandas as pd
import torch.distributed as dist

import impls
from bench import UserError
from bench.grid import AXES, example_label, parse_label, skip_reason
from bench.ranks import distributed
from bench.runs.run_folder import GATE
from bench.runs.status import Status
from bench.timing import runner


def _environment() -> dict:
    from bench.runs.meta import environment

    return {"rank": dist.get_rank(), "local_rank": int(os.environ.get("LOCAL_RANK", 0)), **environment()}


def _agree(value):
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cmd_ranks(args) -> int:
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
        return _ranks(args, cell, setup_s)
    finally:
        dist.destroy_process_group()


def _ranks(args, cell, setup_s: float) -> int:
    """Rank 0 runs ``linbench run``'s lifecycle (prepare, attempt, finish) into a run folder of this one cell;
    every other rank joins its collectives (the gate, the timing) in the same order."""
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, _environment())
    config = dataclasses.replace(runner.plan({a: [v] for a, v in cell.as_dict().items() if a in AXES}, curves=False,
                                             data_dir=args.data_dir), gate_steps=args.steps)
    if dist.get_rank() != 0:
        OnRanks(config, None, setup_s).follow(cell)
        return 0
    store, _ = runner.start(config, args.out)
    store.meta["nodes"] = nodes
    run = OnRanks(config, store, setup_s)
    untimed = run.prepare([cell])
    row, samples = (run.row(cell, *untimed[cell.key()]), None) if cell.key() in untimed else run.attempt(cell)
    store.put(row, samples)
    run.finish([cell])
    store.unlock()
    hosts = sorted({n["host"] for n in nodes})
    print(f"{cell.label()}: {row['status']}, {row.get('samples_per_s', float('nan')):,.0f} samples/s on "
          f"{len(nodes)} ranks, {len(hosts)} node(s) ({', '.join(hosts)}); run {store.folder}")
    return 0 if row["status"] == Status.OK else 1


class OnRanks(runner.Runner):
    """The run lifecycle where torchrun started the ranks: the gate and the timing are collectives of every
    rank (:func:`bench.ranks.distributed._check`, :func:`~bench.ranks.distributed._time`); only rank 0 has a
    store."""

    def __init__(self, config, store, setup_s: float):
        super().__init__(config, store, progress=False)
        self.setup_s = setup_s

    def gate(self, cells) -> dict:
        from bench.gate import check
        from bench.gate.cases import gate_cases

        if not cells:
            return {}
        (cell,) = cells
        cases = gate_cases(cell.spec, [cell.batch_size], self.config.gate_steps, self.config.seed,
                           self.config.data_dir)
        rows = [r.as_dict() for r in distributed._check(self.setup_s, cell.gate_key(), cases)]
        if self.store is not None:
            self.store.meta["gate"] = rows
            self.store.write_table(GATE, pd.DataFrame(rows))
        return _agree(check.failures(rows))

    def measure(self, cell):
        from bench.timing.cell import Settings

        timed = distributed._time(self.setup_s, cell, Settings.of(self.config))
        return self.timed_row(cell, timed, None, None) if self.store is not None else (None, None)

    def follow(self, cell) -> None:
        """What rank 0's lifecycle asks of the other ranks, in its order: the gate, then the timing if it
        passed (nothing for a cell skipped here)."""
        if not skip_reason(cell) and not self.gate([cell]):
            self.measure(cell)


def add_parser(sub) -> None:
    p = sub.add_parser("ranks", help="one distributed cell (ddp) timed by the ranks torchrun started (one node or "
                                     "several); rank 0 writes the run folder")
    p.add_argument("cell", help=f"the cell's label, its k the ranks torchrun starts (e.g. {example_label(ranks=True)})")
    p.add_argument("--out", default="results", help="folder for run folders (default: results)")
    p.add_argument("--steps", type=int, default=50, help="full batches per gate case at most (default: 50)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_ranks)
