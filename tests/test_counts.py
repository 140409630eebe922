"""Instructions per step (``linbench counts``, ``bench.callgrind``): two counts of one cell agree to +-0.5% with
another process keeping a core busy; a planted extra matmul in a form's step moves its count by what that
matmul costs counted alone; the command writes ``counts.csv`` into a run and the report shows it; without
valgrind, one line. Cells: softmax ``vectorized`` at batch 256 (about a minute each under valgrind)."""
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from bench import callgrind
from bench.cli import main
from bench.grid import parse_label

CELL = parse_label("softmax/vectorized/cpu/resident/w0/b256/t1")
PLANT = """
    import torch
    from impls import vectorized

    _step = vectorized._VectorizedForm.step


    def step(self, X, y):
        torch.mm(X.reshape(len(X), -1), self.weight.detach())  # planted: the logits' matmul once more
        return _step(self, X, y)


    vectorized._VectorizedForm.step = step
"""
MATMUL = dict(stmt="torch.mm(X.reshape(len(X), -1), W.detach())",
              setup="import torch\nX = torch.rand(256, 1, 28, 28)\nW = torch.rand(784, 10)")

pytestmark = pytest.mark.skipif(callgrind.valgrind_missing() is not None,
                                reason=str(callgrind.valgrind_missing()))


@pytest.fixture(scope="module")
def counted(tmp_path_factory, real_data):
    """Under one busy core: the cell counted twice, the cell with the planted matmul, and the matmul alone."""
    from torch.utils.benchmark import Timer

    plant = tmp_path_factory.mktemp("plant")
    (plant / "sitecustomize.py").write_text(textwrap.dedent(PLANT))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with callgrind.child_environment(), ThreadPoolExecutor(2) as pool:
            first = pool.submit(callgrind.count_one, CELL)
            second = pool.submit(callgrind.count_one, CELL)
            result = {"first": first.result(), "second": second.result()}
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("PYTHONPATH", f"{plant}:{callgrind.ROOT}")
                planted = pool.submit(callgrind.count_one, CELL)
                alone = pool.submit(lambda: Timer(**MATMUL, num_threads=1).collect_callgrind(
                    number=16, collect_baseline=False).counts() / 16)
                result.update(planted=planted.result(), matmul=alone.result())
    finally:
        spinner.kill()
        spinner.wait()
    return result


def test_two_counts_agree_with_a_core_busy(counted):
    a, b = counted["first"], counted["second"]
    assert a["instr_per_step"] > 1e5  # a 256x784 by 784x10 step is hundreds of thousands of instructions at least
    assert abs(a["instr_per_step"] - b["instr_per_step"]) / a["instr_per_step"] < 0.005, (a, b)
    assert a["instr_spread"] < 0.005 and b["instr_spread"] < 0.005  # the two blocks of one count agree too
    assert "sgemm" in a["top_functions"] or "gemm" in a["top_functions"], a["top_functions"]


def test_a_planted_matmul_moves_the_count_by_its_cost(counted):
    base, planted, matmul = counted["first"]["instr_per_step"], counted["planted"]["instr_per_step"], counted["matmul"]
    assert matmul > 0.05 * base  # the plant is far above the noise of +-0.5%
    assert planted - base == pytest.approx(matmul, rel=0.1), (base, planted, matmul)


def test_counts_go_into_the_run_and_its_report(tmp_path, monkeypatch, counted, capsys):
    """The command's writing and reading, with the counting replaced by the figures measured above."""
    from bench.report.page import Run, build

    rows = [dict(CELL.as_dict(), status="ok", reason="", **counted["first"]),
            dict(parse_label("softmax/cuda_kernels/cuda/resident/w0/b256/t1").as_dict(), status="skipped",
                 reason="instructions are counted on the CPU only")]
    monkeypatch.setattr("bench.counts.count_cells", lambda cells, *a, **k: rows)
    assert main(["counts", "--models", "softmax", "--forms", "vectorized", "--batch-sizes", "256",
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
