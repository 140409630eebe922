"""The command line: bad input is one line on stderr and exit 2; check's JSON is machine-readable."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import run_cli


def linbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=300)


BAD = [
    ["check", "--models", "ridge"],
    ["check", "--forms", "loop,fortran"],
    ["check", "--devices", "tpu"],
    ["check", "--steps", "0"],
    ["check", "--batch-sizes", "0"],
    ["check", "--models", "linreg", "--batch-sizes", "2000"],
    ["check", "--data-dir", "/nonexistent/fashion"],
    ["check", "--format", "xml"],
    ["frobnicate"],
]
if not torch.cuda.is_available():
    BAD.append(["check", "--devices", "cuda"])


@pytest.mark.parametrize("args", BAD, ids=" ".join)
def test_bad_input_is_one_line_and_exit_2(args, capsys):
    """Through ``main`` in this process; the first one also through the command, in a process of its own."""
    if args == BAD[0]:
        out = linbench(*args)
        code, err = out.returncode, out.stderr
    else:
        code, err = run_cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("linbench: error:")
    assert "Traceback" not in err


def test_check_json(real_data):
    out = linbench("check", "--models", "linreg", "--forms", "loop,vectorized", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["form"], r["status"]) for r in rows] == [("loop", "pass"), ("vectorized", "pass")]
    assert all(r["rtol"] > 0 and r["tolerance_reason"] for r in rows)
    assert [(r["case"], r["batch_size"], r["batches"]) for r in rows] == [("batch 10", 10, "50x10 + 1")] * 2
