"""``linbench ab``'s pairing, without timing anything: the orchestrator lets the two sides' timed blocks take
turns A B B A and never lets one side go while the other is working; a round's log-ratio comes from the pairs
and shrugs off a burst; a side's samples are split into its slots as its meta.json counts say."""
import math

import numpy as np
import pandas as pd
import pytest

from bench.grid import parse_label
from bench.regress.rounds import slot_samples, take_turns
from bench.regress.stats import round_log_ratio


class FakeWorker:
    """A worker with ``blocks`` timed blocks in its slot; its blocks go into the shared ``log``, and ``working``
    holds the sides working now (from a command until their next word)."""

    def __init__(self, side, blocks, log, working, status="ok"):
        self.side, self.left, self.log, self.working, self.status = side, blocks, log, working, status

    def send(self, **msg):
        if msg["cmd"] == "go":
            assert not self.working, f"{self.side} let go while {self.working} worked"
            self.log.append(self.side)
        self.working.add(self.side)

    def receive(self):
        self.working.discard(self.side)
        if self.left:
            self.left -= 1
            return {"ok": True, "ready": True}
        return {"ok": True, "status": self.status, "reason": ""}


def test_blocks_take_turns_a_b_b_a_and_a_side_left_alone_finishes():
    log, working = [], set()
    done = take_turns({s: FakeWorker(s, 8, log, working) for s in "AB"}, "cell")
    assert "".join(log) == "ABBAABBAABBAABBA"
    assert {s: r["status"] for s, r in done.items()} == {"A": "ok", "B": "ok"}
    log = []
    done = take_turns({"A": FakeWorker("A", 5, log, working), "B": FakeWorker("B", 2, log, working, "error")}, "c")
    assert "".join(log) == "ABBAAAA" and done["B"]["status"] == "error"


def test_a_round_log_ratio_comes_from_pairs_and_shrugs_off_a_burst():
    a, b = np.full(20, 1.0), np.full(20, 1.1)
    assert round_log_ratio(a, b) == pytest.approx(math.log(1.1))
    b[3] = 3.0  # one block of B caught a burst of load
    assert round_log_ratio(a, b) == pytest.approx(math.log(1.1))
    drift = np.linspace(1.0, 1.2, 8)  # the machine slows through the round; in turns A B B A ...
    a = [drift[0], drift[3], drift[4], drift[7]]
    b = [drift[1], drift[2], drift[5], drift[6]]
    assert abs(round_log_ratio(a, b)) < 0.01  # the pairs' alternating order cancels the drift
    assert math.isnan(round_log_ratio([], [1.0]))


def test_a_side_samples_split_into_its_slots_as_counted():
    axes = parse_label("softmax/module/cpu/resident/w0/b256/t1").as_dict()

    class Run:
        meta = {"ab": {"slots": {"softmax/module/cpu/resident/w0/b256/t1": {"step": [2, 3], "epoch": [1, 1]}}}}
        samples = pd.DataFrame([{**axes, "metric": "step", "repeat": i, "seconds": float(i)} for i in range(5)]
                               + [{**axes, "metric": "epoch", "repeat": i, "seconds": 9.0} for i in range(3)])

    split = slot_samples(Run())
    assert split[("softmax/module/cpu/resident/w0/b256/t1", "step")] == [[0.0, 1.0], [2.0, 3.0, 4.0]]
    assert ("softmax/module/cpu/resident/w0/b256/t1", "epoch") not in split  # 3 samples, counts say 2
