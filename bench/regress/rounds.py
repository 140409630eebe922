"""``linbench ab``'s paired rounds: the rounds run (:func:`measure`: a fresh pair of workers each, every open
cell timed A B B A), each round's slot values of both sides read back from their run folders, the paired
estimate of every (cell, metric), which cells are settled (rounds go on only for the cells still undecided,
until the budget ends) and the verdicts judged (:func:`judge`), for ``linbench ab`` and its calibration.

A round times every cell still open A B B A, each slot in a fresh pair of worker processes; a slot's value is
the median of its samples (:func:`bench.regress.ab_worker.slot_medians`), and a round's value for a side is
its two slots. The decision while measuring is made at alpha/m for every one of the run's m comparisons
(Bonferroni: the first step of the Holm rule the final verdicts use, so a cell settled here keeps its verdict).
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import UserError
from bench.regress.ab_worker import PROTOCOL, Worker
from bench.regress.stats import Estimate, paired, settled

ORDER = "ABBA"
SLOTS_PER_ROUND = 2  # a side's slots in one round: A B B A
# a slot: --repeats epochs and loader passes and 20 step passes, each kept as measured (the round's pairing, not
# a re-measure, copes with others' load); its value is their median
SLOT = {"seconds": 0.0, "step_seconds": 0.0, "step_repeats": 20, "remeasures": 0}


def by_round(values: list[float]) -> list[list[float]]:
    """A side's slot values of one cell and metric, in the order measured, grouped by round."""
    return [values[i:i + SLOTS_PER_ROUND] for i in range(0, len(values) - SLOTS_PER_ROUND + 1, SLOTS_PER_ROUND)]


def paired_estimate(label: str, metric: str, a: list[float], b: list[float]) -> Estimate | None:
    """The paired estimate of B/A from both sides' slot values (the signature of verdicts.compare_runs's
    ``estimate``)."""
    return paired(by_round(a), by_round(b))


def slot_values(folder) -> dict[tuple[str, str], list[list[float]]]:
    """(label, metric) -> [A's slot values, B's], read from the ab folder's two run folders."""
    from bench.grid import AXES, label_of
    from bench.regress.ab_worker import slot_medians
    from bench.run_folder import Run

    out: dict[tuple[str, str], list[list[float]]] = {}
    for i, side in enumerate("AB"):
        samples = slot_medians(Run(folder / side)).samples
        if samples is None:
            continue
        for (*axes, metric), group in samples.groupby([*AXES, "metric"], sort=False):
            key = (label_of(dict(zip(AXES, axes))), metric)
            out.setdefault(key, [[], []])[i] = group.sort_values("repeat")["seconds"].astype(float).tolist()
    return out


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
        values = slot_values(folder)
        m = max(1, len(values))
        for label in self.labels:
            mine = [(a, b) for (c, _), (a, b) in values.items() if c == label]
            if mine and all(settled(paired_estimate(label, "", a, b), self.min_effect, self.alpha / m)
                            for a, b in mine):
                self.done.add(label)


def interleave(workers: dict, labels: list[str], r: int, errors: dict[str, str], progress) -> None:
    """Round ``r``: every cell of ``labels`` timed in the order A B B A, each slot's seconds charged to its cell;
    a cell that errors (side: why, into ``errors``) is not timed again."""
    for i, label in enumerate(labels):
        print(f"round {r + 1}, cell {i + 1}/{len(labels)}: {label} {' '.join(ORDER)}", file=sys.stderr)
        for side in ORDER:
            start = time.perf_counter()
            reply = workers[side].ask(cmd="measure", cell=label)
            progress.charge(label, time.perf_counter() - start)
            if reply["status"] != "ok":
                errors[label] = f"{side}: {reply['reason']}"
                break


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
            raise UserError(f"{revs[side]} speaks worker protocol {reply.get('protocol')}, not {PROTOCOL}")
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
    from bench.regress.ab_worker import slot_medians
    from bench.regress.verdicts import compare_runs
    from bench.run_folder import Run
    from bench.store import write_atomic

    a, b = Run(folder / "A"), Run(folder / "B")
    frame = compare_runs(slot_medians(a), slot_medians(b), args.min_effect, args.alpha, estimate=paired_estimate)
    frame.insert(frame.columns.get_loc("n_a"), "rounds", frame["n_a"] // 2)
    write_atomic(folder / "compare.csv", frame.to_csv(index=False))
    return a, b, frame
