"""``linbench ab``'s paired rounds: the rounds run (:func:`measure`: a fresh pair of workers each, every open
cell's slot timed on both sides in turns), each round's samples of both sides read back from their run folders,
the paired estimate of every (cell, metric), which cells are settled (rounds go on only for the cells still
undecided, until the budget ends) and the verdicts judged (:func:`judge`), for ``linbench ab`` and its calibration.

A round times one slot of every cell still open on each side, both workers going through the same timed blocks
(epochs, step passes, loader passes) in turns, A B B A block by block (:func:`take_turns`): the two samples of
a pair are a fraction of a second apart, so the machine's swings over seconds hit both. A round's value is the
median of its pairs' log-ratios (:func:`bench.regress.stats.round_log_ratio`); rounds, each in fresh processes,
are the independent repeats. The decision while measuring is made at alpha/m for every one of the run's m
comparisons (Bonferroni: the first step of the Holm rule the final verdicts use, so a cell settled here keeps
its verdict).
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import UserError
from bench.regress.ab_worker import PROTOCOL, Worker
from bench.regress.stats import paired, settled

ORDER = "ABBA"  # the turns of the timed blocks, repeated
# a slot: --repeats epochs and loader passes and 20 step passes, each kept as measured (the pairing, not a
# re-measure, copes with others' load)
SLOT = {"seconds": 0.0, "step_seconds": 0.0, "step_repeats": 20, "remeasures": 0}


def slot_samples(run) -> dict[tuple[str, str], list[list[float]]]:
    """(label, metric) -> the samples of each of the side's slots, in order (one slot a round), split where
    ``meta.json``'s ``ab.slots`` counts say; a cell whose counts do not add up is left out."""
    from bench.grid import AXES, label_of

    counts = (run.meta.get("ab") or {}).get("slots") or {}
    out: dict[tuple[str, str], list[list[float]]] = {}
    if run.samples is None:
        return out
    for (*axes, metric), group in run.samples.groupby([*AXES, "metric"], sort=False):
        label = label_of(dict(zip(AXES, axes)))
        seconds = group.sort_values("repeat")["seconds"].astype(float).tolist()
        sizes = counts.get(label, {}).get(metric) or []
        if sizes and sum(sizes) == len(seconds):
            ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
            out[(label, metric)] = [seconds[end - n:end] for n, end in zip(sizes, ends)]
    return out


def round_samples(folder) -> dict[tuple[str, str], tuple[list, list]]:
    """(label, metric) -> (A's slots, B's slots), read from the ab folder's two run folders."""
    from bench.runs.run_folder import Run

    a, b = (slot_samples(Run(folder / side)) for side in "AB")
    return {key: (a[key], b[key]) for key in a if key in b}


def estimator(rounds: dict):
    """The paired estimate of B/A per (label, metric) from ``rounds`` (:func:`round_samples`), in the signature
    of verdicts.compare_runs's ``estimate``."""
    def estimate(label: str, metric: str, _a, _b):
        return paired(*rounds[(label, metric)]) if (label, metric) in rounds else None
    return estimate


@dataclass
class Progress:
    """Per cell: the seconds its slots (and its share of the workers' starts) took, and whether it is settled."""
    labels: list[str]
    budget: float
    min_effect: float
    alpha: float
    spent: dict = field(default_factory=dict)
    done: set = field(default_factory=set)

    def open(self, errors: dict, rounds: int, min_rounds: int, max_rounds: int) -> list[str]:
        """The cells the next round times: not errored and, past ``min_rounds``, not settled and within the budget;
        none past ``max_rounds``."""
        if rounds >= max_rounds:
            return []
        return [c for c in self.labels if c not in errors
                and (rounds < min_rounds or (c not in self.done and self.spent.get(c, 0.0) < self.budget))]

    def charge(self, label: str, seconds: float) -> None:
        self.spent[label] = self.spent.get(label, 0.0) + seconds

    def settle(self, folder) -> None:
        """Which cells are decided now: every metric's interval at alpha/m wholly outside or inside the band
        (m: the comparisons measured so far)."""
        rounds = round_samples(folder)
        m = max(1, len(rounds))
        for label in self.labels:
            mine = [(a, b) for (c, _), (a, b) in rounds.items() if c == label]
            if mine and all(settled(paired(a, b), self.min_effect, self.alpha / m)
                            for a, b in mine):
                self.done.add(label)


def interleave(workers: dict, labels: list[str], r: int, errors: dict[str, str], progress) -> None:
    """Round ``r``: a slot of every cell of ``labels`` on both sides (:func:`take_turns`), its seconds charged to
    the cell; a cell that errors (side: why, into ``errors``) is not timed again."""
    for i, label in enumerate(labels):
        print(f"round {r + 1}, cell {i + 1}/{len(labels)}: {label}", file=sys.stderr)
        start = time.perf_counter()
        for side, reply in take_turns(workers, label).items():
            if reply["status"] != "ok" and label not in errors:
                errors[label] = f"{side}: {reply['reason']}"
        progress.charge(label, time.perf_counter() - start)


def take_turns(workers: dict, label: str) -> dict:
    """One slot of ``label`` on both sides at once, their timed blocks in turns A B B A ...: a side is let go
    only while the other waits for its turn or is done, so no timed block overlaps the other side's work.
    Both sides' final answers."""
    for side in "AB":
        workers[side].send(cmd="measure", cell=label, turns=True)
    waiting, done, turn = set(), {}, 0
    while len(done) < 2:
        for side in "AB":  # every side that is working: its next word, ready for a block or done
            if side not in waiting and side not in done:
                reply = workers[side].receive()
                if reply.get("ready"):
                    waiting.add(side)
                else:
                    done[side] = reply
        if waiting:
            side = ORDER[turn % len(ORDER)]
            side = side if side in waiting else next(iter(waiting))
            waiting.discard(side)
            workers[side].send(cmd="go")
            turn += 1
    return done


def new_folder(out: str, shas: dict, prefix: str = "ab") -> Path:
    """``OUT/<prefix>-<a>-<b>-<time>`` (``.2``, ``.3`` ... when taken), made."""
    name, n = f"{prefix}-{shas['A'][:7]}-{shas['B'][:7]}-{dt.datetime.now():%Y%m%d-%H%M%S}", 1
    while (folder := Path(out).resolve() / (name + (f".{n}" if n > 1 else ""))).exists():
        n += 1
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot write results under {out}: {e.strerror or e}") from None
    return folder


def measure(folder: Path, trees: dict, shas: dict, overrides: dict, args) -> tuple[list, list, float]:
    """Rounds of A B B A until every cell is settled or out of budget; (failing, notes, seconds taken)."""

    config = {"overrides": overrides, "quick": args.quick, "repeats": args.repeats, "curves": False,
              "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}
    revs = {"A": args.rev_a or shas["A"], "B": args.rev_b or shas["B"]}
    slots = {"A": SLOT, "B": {**SLOT, "plant": args.plant} if args.plant != 1 else SLOT}
    print(f"ab {folder}: A = {revs['A']} ({shas['A'][:12]}), B = {revs['B']} ({shas['B'][:12]})"
          + (f", B's steps planted x{args.plant:g}" if args.plant != 1 else ""), file=sys.stderr)
    workers, errors, started, labels, progress = {}, {}, {}, [], None
    failing, notes, begun, r = [], [], time.perf_counter(), 0
    try:
        while r == 0 or (todo := progress.open(errors, r, args.rounds, args.max_rounds)):
            start = time.perf_counter()  # a fresh pair of workers every round: a process's own luck (its memory
            # layout, say) is then one round's, not one side's for the whole comparison
            workers = {side: Worker(side, trees[side], folder / f"{side}.log") for side in "AB"}
            if r:
                for side in "AB":
                    workers[side].send(cmd="start", run=started[side]["run"], slot=slots[side])
                for side in "AB":
                    workers[side].receive()
            else:
                started = {side: first_start(workers[side], revs[side], out=str(folder), run_id=side, config=config,
                                             slot=slots[side], ab={"side": side, "rev": revs[side], "sha": shas[side],
                                                                   "other": shas["B" if side == "A" else "A"],
                                                                   "order": ORDER, "plant": args.plant if side == "B"
                                                                   else 1.0}) for side in "AB"}
                labels, failing, notes = timed_labels(started, revs)
                progress = Progress(labels, args.budget, args.min_effect, args.alpha)
                todo = labels
            for label in todo:  # the workers' start, shared by the cells of the round
                progress.charge(label, (time.perf_counter() - start) / len(todo))
            interleave(workers, todo, r, errors, progress)
            r += 1
            progress.settle(folder)
            last = not progress.open(errors, r, args.rounds, args.max_rounds)
            print(f"round {r}: {time.perf_counter() - start:.1f} s; settled {len(progress.done)} of {len(labels)} "
                  f"cell(s)", file=sys.stderr)
            for w in workers.values():
                w.close(complete=last)
    finally:
        for w in workers.values():
            w.close()
    for label, why in errors.items():
        (failing if why.startswith("B") else notes).append(f"{label}: error in {why}")
    return failing, notes, time.perf_counter() - begun


def first_start(worker, rev: str, **msg) -> dict:
    """The first round's start of one side; a revision whose worker cannot time a slot as this one asks (from
    before paired slots) is a one-line error: its slots would be measured otherwise than the other side's."""
    try:
        return worker.ask(cmd="start", **msg)
    except UserError as e:
        if "unknown Settings fields" in str(e):
            raise UserError(f"{rev} times its slots another way (its worker says: {str(e).split(': ', 1)[-1]}): ab "
                            "compares revisions from the paired rounds on (bench/regress/ab_worker.py)") from None
        raise


def timed_labels(started: dict, revs: dict) -> tuple[list[str], list[str], list[str]]:
    """The first workers' answers read: the cells both sides time, the cells B fails, the notes."""
    for side, reply in started.items():
        if reply.get("protocol") != PROTOCOL:
            raise UserError(f"{revs[side]} speaks worker protocol {reply.get('protocol')}, not {PROTOCOL}: ab compares "
                            "revisions whose workers take turns block by block (bench/regress/ab_worker.py)")
    cells = {side: {c["label"]: c for c in started[side]["cells"]} for side in "AB"}
    labels = [label for label, c in cells["A"].items()
              if c["status"] == "ok" and cells["B"].get(label, {}).get("status") == "ok"]
    failing, notes = differences(cells)
    if not labels:
        raise UserError("no cell can be timed on both sides" + "".join(f" ({w})" for w in (failing + notes)[:1]))
    return labels, failing, notes


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


def judge(folder: Path, args):
    """compare.csv of an ab folder: every cell and metric judged from its paired rounds (Holm over the run)."""
    from bench.regress.verdicts import compare_runs
    from bench.runs.run_folder import Run
    from bench.runs.store import write_atomic

    a, b, rounds = Run(folder / "A"), Run(folder / "B"), round_samples(folder)
    frame = compare_runs(a, b, args.min_effect, args.alpha, estimate=estimator(rounds))
    counts = [min(len(x) for x in rounds.get((c, m), ([], []))) for c, m in zip(frame["cell"], frame["metric"])]
    frame.insert(frame.columns.get_loc("n_a"), "rounds", counts)
    write_atomic(folder / "compare.csv", frame.to_csv(index=False))
    return a, b, frame
