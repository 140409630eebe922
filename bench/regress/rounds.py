"""``linbench ab``'s paired rounds: each round's slot values of both sides read back from their run folders,
the paired estimate of every (cell, metric), and which cells are settled, so that rounds go on only for the
cells still undecided, until the budget ends.

A round times every cell still open A B B A, each slot in a fresh pair of worker processes; a slot's value is
the median of its samples (:func:`bench.regress.ab_worker.slot_medians`), and a round's value for a side is
its two slots. The decision while measuring is made at alpha/m for every one of the run's m comparisons
(Bonferroni: the first step of the Holm rule the final verdicts use, so a cell settled here keeps its verdict).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.regress.stats import Estimate, paired, settled

SLOTS_PER_ROUND = 2  # a side's slots in one round: A B B A


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
        """The cells the next round times: not errored, not settled, within the budget and the rounds."""
        if rounds >= max_rounds:
            return []
        return [c for c in self.labels if c not in errors and (rounds < min_rounds or c not in self.done)
                and self.spent.get(c, 0.0) < self.budget]

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
