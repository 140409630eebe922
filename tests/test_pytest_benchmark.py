"""A smoke run of the pytest-benchmark set (bench/): it runs, saves, compares, draws histograms and
names the cell; params serialise; a step is one step; a capped pass reports its epoch extrapolated."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.grid import train_examples

REPO = Path(__file__).resolve().parent.parent
STEP = "test_step and linreg-vectorized-cpu-resident"
FIRST = f"({STEP}) or test_epoch and linreg-vectorized-cpu-resident or test_capped_pass and softmax-loop-cpu-resident"


def pytest_bench(tmp_path, select, *args):
    """pytest on bench/ from ``tmp_path`` (pytest-benchmark keeps its storage under the rootdir)."""
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench" / "test_benchmarks.py"),
                           "--rootdir", str(tmp_path), "-q", "-p", "no:cacheprovider",
                           "-k", select, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_benchmarks_run_save_and_compare(tmp_path):
    storage = f"file://{tmp_path / 'storage'}"
    first = pytest_bench(tmp_path, FIRST, "--benchmark-only", "--benchmark-autosave", "--benchmark-storage", storage,
                         "--benchmark-json", str(tmp_path / "first.json"), "--benchmark-histogram",
                         str(tmp_path / "hist"))
    assert first.returncode == 0, first.stdout + first.stderr
    text = (tmp_path / "first.json").read_text()
    assert "UNSERIALIZABLE" not in text
    data = json.loads(text)
    found = {b["name"]: b for b in data["benchmarks"]}
    assert data["machine_info"]["linbench"]["threads"] == [1] and "torch" in data["machine_info"]["linbench"]

    step = found["test_step[linreg-vectorized-cpu-resident-w0-b10-t1]"]
    assert step["params"] == {"cell": "linreg/vectorized/cpu/resident/w0/b10/t1"}
    assert step["group"] == "step linreg cpu b10" and step["extra_info"]["form"] == "vectorized"
    assert step["stats"]["iterations"] == 16  # one step per call: a round is one cycle of the batches
    assert step["extra_info"]["step_ms"] == pytest.approx(step["stats"]["median"] * 1e3)

    epoch = found["test_epoch[linreg-vectorized-cpu-resident-w0-b10-t1]"]
    assert epoch["extra_info"]["epoch_s"] == pytest.approx(epoch["stats"]["median"])  # a whole epoch
    assert epoch["extra_info"]["samples"] == train_examples("linreg")

    # the capped pure-Python form
    loop = found["test_capped_pass[softmax-loop-cpu-resident-w0-b256-t1]"]
    scale = train_examples("softmax") / loop["extra_info"]["samples"]
    assert scale > 10 and loop["extra_info"]["epoch_scale"] == pytest.approx(scale)
    assert loop["extra_info"]["epoch_s"] == pytest.approx(loop["stats"]["median"] * scale)
    assert loop["group"] == "capped pass softmax cpu b256"  # never ranked among whole epochs
    assert len(list(tmp_path.glob("hist-*.svg"))) == 3  # one per group: the [histogram] extra works
    assert len(list((tmp_path / "storage").rglob("*.json"))) == 1

    second = pytest_bench(tmp_path, STEP, "--benchmark-only", "--benchmark-storage", storage, "--benchmark-compare",
                          "--benchmark-compare-fail=median:1000%")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0001" in second.stdout  # the saved run it compared against
    assert "machine_info is different" not in second.stdout + second.stderr


def test_benchmarks_pass_as_plain_tests_with_timing_off(tmp_path):
    """``--benchmark-disable`` calls each benchmark once, untimed: the set still passes as tests."""
    plain = pytest_bench(tmp_path, STEP, "--benchmark-disable")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1 passed" in plain.stdout
