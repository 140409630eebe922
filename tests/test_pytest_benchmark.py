"""A smoke run of the pytest-benchmark set (bench/): it runs, saves, compares and names the cell."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SELECT = "test_step and linreg-vectorized-cpu-resident"


def pytest_bench(tmp_path, *args):
    """pytest on bench/ from ``tmp_path`` (pytest-benchmark keeps its storage under the rootdir)."""
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench" / "test_benchmarks.py"),
                           "--rootdir", str(tmp_path), "-q", "-p", "no:cacheprovider",
                           "-k", SELECT, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_benchmarks_run_save_and_compare(tmp_path):
    storage = f"file://{tmp_path / 'storage'}"
    first = pytest_bench(tmp_path, "--benchmark-only", "--benchmark-autosave", "--benchmark-storage", storage,
                         "--benchmark-json", str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stdout + first.stderr
    data = json.loads((tmp_path / "first.json").read_text())
    (bench,) = data["benchmarks"]
    assert bench["name"] == "test_step[linreg-vectorized-cpu-resident-w0-b10]"
    assert bench["group"] == "step linreg cpu b10"
    assert bench["extra_info"]["form"] == "vectorized" and bench["extra_info"]["samples_per_s"] > 0
    assert data["machine_info"]["linbench"]["threads"] >= 1 and "torch" in data["machine_info"]["linbench"]
    assert len(list((tmp_path / "storage").rglob("*.json"))) == 1

    second = pytest_bench(tmp_path, "--benchmark-only", "--benchmark-storage", storage, "--benchmark-compare",
                          "--benchmark-compare-fail=median:1000%")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0001" in second.stdout  # the saved run it compared against
    assert "machine_info is different" not in second.stdout + second.stderr


def test_benchmarks_pass_as_plain_tests_with_timing_off(tmp_path):
    """``--benchmark-disable`` calls each benchmark once, untimed: the set still passes as tests."""
    plain = pytest_bench(tmp_path, "--benchmark-disable")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1 passed" in plain.stdout
