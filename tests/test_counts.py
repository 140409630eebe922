"""Instructions per step (``linbench counts``, ``bench.signals.callgrind``): with another process keeping a core
busy (the other count: both run at once), a count repeats (its two blocks agree to +-0.5%) and a planted extra step,
one in every 16, counted in that other process, moves the count by exactly that step's share (17/16, to +-0.5%: so
two processes' counts agree to that too); the command writes ``counts.csv`` into a run and the report shows it;
without valgrind, one line. Cell: linreg ``vectorized`` at batch 10 (its data made, not loaded, under valgrind: a
count takes about half a minute; the two run at once)."""
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import psutil
import pytest

from bench.cli import main
from bench.grid import parse_label
from bench.signals import callgrind

CELL = parse_label("linreg/vectorized/cpu/resident/w0/b10/t1")
PLANT = """
    from impls import vectorized

    _step = vectorized.VectorizedForm.step


    def step(self, X, y):
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls % 16 == 0:  # planted: every 16th step done twice
            _step(self, X, y)
        return _step(self, X, y)


    vectorized.VectorizedForm.step = step
"""

pytestmark = pytest.mark.skipif(callgrind.valgrind_missing() is not None,
                                reason=str(callgrind.valgrind_missing()))


def counting_with(path: str) -> bool:
    """Whether a callgrind process under this one runs with ``path`` on its PYTHONPATH."""
    for child in psutil.Process().children(recursive=True):
        try:
            if "--tool=callgrind" in child.cmdline() and path in child.environ().get("PYTHONPATH", ""):
                return True
        except psutil.Error:  # gone meanwhile
            pass
    return False


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """At once, each keeping a core busy while the other counts: the cell counted, and the cell with the planted extra
    step."""
    plant = tmp_path_factory.mktemp("plant")
    (plant / "sitecustomize.py").write_text(textwrap.dedent(PLANT))
    with callgrind.child_environment(), ThreadPoolExecutor(2) as pool:
        with pytest.MonkeyPatch.context() as mp:  # a child takes the environment it starts with
            mp.setenv("PYTHONPATH", f"{plant}:{callgrind.ROOT}")
            planted = pool.submit(callgrind.count_one, CELL)
            started = time.monotonic()
            while not (planted.done() or counting_with(str(plant))):
                assert time.monotonic() - started < 120, "the planted count did not start"
                time.sleep(0.1)
        first = pool.submit(callgrind.count_one, CELL)
        return {"first": first.result(), "planted": planted.result()}


def test_a_count_repeats_with_a_core_busy(counted):
    a = counted["first"]
    assert a["instr_per_step"] > 1e5  # an autograd step through torch's dispatcher: hundreds of thousands at least
    assert a["instr_spread"] < 0.005, a  # its two blocks, each of 16 steps, agree
    assert "%" in a["top_functions"], a["top_functions"]  # the functions with the most instructions, named


def test_a_planted_extra_step_moves_the_count_by_its_share(counted):
    """Each counted block of 16 steps holds one doubled step: 17/16 of the step, a 6.25% change known exactly."""
    base, planted = counted["first"]["instr_per_step"], counted["planted"]["instr_per_step"]
    assert planted == pytest.approx(base * 17 / 16, rel=0.005), (base, planted)
    assert counted["planted"]["instr_spread"] < 0.005  # one doubled step in each block, wherever it falls


def test_counts_go_into_the_run_and_its_report(tmp_path, monkeypatch, counted, capsys):
    """The command's writing and reading, with the counting replaced by the figures measured above."""
    from bench.report.page import Run, build

    rows = [dict(CELL.as_dict(), status="ok", reason="", **counted["first"]),
            dict(parse_label("softmax/cuda/cuda/resident/w0/b256/t1").as_dict(), status="skipped",
                 reason="instructions are counted on the CPU only")]
    monkeypatch.setattr("bench.signals.counts.count_cells", lambda cells, *a, **k: rows)
    assert main(["counts", "--models", "linreg", "--forms", "vectorized", "--batch-sizes", "10",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "instr_per_step" in out and f"{counted['first']['instr_per_step']:,.0f}" in out
    folder = next(p for p in tmp_path.iterdir() if (p / "counts.csv").exists())
    frame = pd.read_csv(folder / "counts.csv")
    assert list(frame["status"]) == ["ok", "skipped"]
    assert frame["instr_per_step"][0] == counted["first"]["instr_per_step"]
    page = build([Run(folder)], tmp_path / "report").read_text()
    assert "Instructions per step (valgrind)" in page and "figures/instructions.png" in page


def test_without_valgrind_one_line(monkeypatch, capsys):
    monkeypatch.setattr(callgrind.shutil, "which", lambda name: None)
    assert main(["counts", "--models", "linreg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "valgrind" in err[0] and "apt-get install valgrind" in err[0]


def test_count_flags_are_checked(capsys):
    assert main(["counts", "--threads", "2"]) == 2
    assert main(["counts", "--steps", "0"]) == 2
    assert main(["counts", "--run", "/no/such/run"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "one thread" in errors[0] and "positive" in errors[1] and "no such" in errors[2]
