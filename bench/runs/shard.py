"""One grid split across machines: ``linbench run --shard I/N`` runs a deterministic 1/N of its cells.

The split balances the expected seconds of the shards, not only their counts: :func:`cost` is a small
model of what timing a cell takes (its passes over the model's epoch at a rough rate for its device and
batch size, the pure-Python form capped per pass, the loader's own passes and worker start-up, compile
time for a form that compiles, process start-up per rank for a distributed one; a cell that is skipped
costs next to nothing), and :func:`assign` is a greedy longest-processing-time assignment: cells by
cost, largest first (ties by label), each to the shard with the least cost so far (ties: fewest cells,
then the lowest index). The same grid gives the same shards on every machine, whatever it can run (a
shard's cells this machine cannot run are skipped here with their reason).

A shard's ``meta.json`` keeps the whole run config and :func:`record`'s ``shard`` entry: its index and
count, its cells' labels, and the full grid's cell count and hash, which ``linbench merge`` checks.
"""
from __future__ import annotations

import hashlib
import re

import impls
from bench import UserError
from bench.grid import Cell, sample_cap, skip_reason, train_examples
from bench.loaders import DATALOADER_KINDS

# rough rates of a 2-core CPU and one GPU: the model only needs the costs' proportions right
FLOPS = {"cpu": 40e9, "cuda": 5e12}  # a tensor form's step: flop/s
STEP_OVERHEAD = {"cpu": 60e-6, "cuda": 30e-6}  # seconds per step outside the arithmetic
PYTHON_FLOPS, PYTHON_PER_SAMPLE = 85e6, 1.5e-6  # the pure-Python form (the one with a sample cap)
LOADER_PER_SAMPLE = {"resident": (0.15e-6, 0.0), "tensor": (0.7e-6, 0.0), "torchvision": (2e-6, 6e-9)}  # (s, s/byte)
WORKER_START = (0.5, 0.2)  # seconds a cell with DataLoader workers spends starting them: once, per worker
TIMED_MIN, TIMED_TARGET, TIMED_UNTIL = 3, 8, 1.0  # passes: at least 3, up to ~8 within about 1 s (RunConfig.seconds)
STEP_BATCHES, STEP_UNTIL = 16, 0.3  # compute-only samples: passes over 16 batches, about 0.3 s of them
CELL_OVERHEAD = 0.3  # building the form and the loader
COMPILE_S = 3.0  # a form that compiles: its graphs for the cell's batch sizes (most in the gate)
RANK_START = 3.0  # a distributed form: process start-up per rank
SKIPPED = 1e-3


def parse(text: str) -> tuple[int, int]:
    """``I/N`` as (I, N) with 1 <= I <= N; anything else is a one-line user error."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise UserError(f"--shard expects I/N (the I-th of N shards, e.g. 2/4), got {text!r}")
    index, count = int(m[1]), int(m[2])
    if count < 1 or not 1 <= index <= count:
        raise UserError(f"--shard {text}: needs 1 <= I <= N (shards are numbered 1 to N)")
    return index, count


def _hook(model: str, form: str, name: str):
    try:
        return getattr(impls.form_class(model, form), name, None)
    except (ImportError, KeyError, impls.UnknownName):
        return None


def _passes(seconds: float, until: float = TIMED_UNTIL) -> float:
    """Seconds of the timed passes of a pass of ``seconds``: a warm one, then at least 3, more while cheap."""
    return seconds + max(TIMED_MIN * seconds, min(TIMED_TARGET * seconds, until))


def cost(cell: Cell) -> float:
    """The expected seconds of timing ``cell``, the same on every machine (a cell only this machine cannot
    run, e.g. without a GPU, costs what it would cost where it runs)."""
    if skip_reason(cell, here=False):
        return SKIPPED
    values = cell.as_dict()
    spec, dev = cell.spec, "cuda" if str(cell.device).startswith("cuda") else "cpu"
    total = train_examples(spec)
    batch = min(int(cell.batch_size), total)
    samples = min(sample_cap(cell) or total, total)
    flops, bytes_ = spec.cost(batch)
    if sample_cap(cell):  # the pure-Python form: one example at a time
        step = batch * PYTHON_PER_SAMPLE + flops / PYTHON_FLOPS
    else:
        step = STEP_OVERHEAD[dev] + flops / FLOPS[dev]
    per_sample, per_byte = LOADER_PER_SAMPLE.get(cell.loader, LOADER_PER_SAMPLE["tensor"])
    loader = samples * (per_sample + per_byte * bytes_ / batch)
    seconds = (CELL_OVERHEAD + _passes(samples / batch * step + loader) + _passes(STEP_BATCHES * step, STEP_UNTIL)
               + _passes(loader))
    workers = int(values.get("workers") or 0)
    if cell.loader in DATALOADER_KINDS and workers:
        seconds += WORKER_START[0] + WORKER_START[1] * workers
    if _hook(cell.model, cell.form, "compile_log"):
        seconds += COMPILE_S
    ranks = int(values.get("world_size") or 1)
    if ranks > 1 or _hook(cell.model, cell.form, "distributed") is True:
        seconds += RANK_START * ranks
    return seconds


def assign(cells: list[Cell], count: int) -> list[list[Cell]]:
    """``cells`` in ``count`` shards of near-equal expected seconds (greedy longest processing time);
    each shard's cells in the grid's order. Deterministic: the same cells give the same shards."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    order = {c.key(): i for i, c in enumerate(cells)}
    costed = sorted(((cost(c), c.label(), c) for c in cells), key=lambda t: (-t[0], t[1]))
    loads = [[0.0, 0, i] for i in range(count)]  # cost so far, cells so far, index
    shards: list[list[Cell]] = [[] for _ in range(count)]
    for seconds, _, cell in costed:
        least = min(loads)
        shards[least[2]].append(cell)
        least[0] += seconds
        least[1] += 1
    return [sorted(s, key=lambda c: order[c.key()]) for s in shards]


def select(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count``."""
    return assign(cells, count)[index - 1]


def grid_hash(labels) -> str:
    """A short hash of a set of cell labels (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(labels)).encode()).hexdigest()[:16]


def record(cells: list[Cell], index: int, count: int) -> tuple[dict, list[Cell]]:
    """(the ``shard`` entry of meta.json, the shard's cells) for shard ``index`` of ``count`` of ``cells``."""
    mine = select(cells, index, count)
    entry = {"index": index, "count": count, "cells": [c.label() for c in mine],
             "grid_cells": len(cells), "grid_hash": grid_hash(c.label() for c in cells)}
    return entry, mine


def suffix(index: int, count: int) -> str:
    return f"-shard{index}of{count}"


def cells_of(entry: dict, cells: list[Cell], where) -> list[Cell]:
    """The cells a shard's meta entry names, out of its grid ``cells`` (``--resume``); a one-line user error
    where the grid expanded here lacks some (e.g. another thread count by default)."""
    by_label = {c.label(): c for c in cells}
    try:
        labels = [str(label) for label in entry["cells"]]
    except (KeyError, TypeError):
        raise UserError(f"{where}: its shard entry lists no cells; start the shard again") from None
    missing = [label for label in labels if label not in by_label]
    if missing:
        raise UserError(f"{where}: {len(missing)} of the shard's cells are not in its grid as expanded here (e.g. "
                        f"{missing[0]}); resume it on a machine like the one that started it, or pass --threads")
    return [by_label[label] for label in labels]
