"""The short GPU check (``scripts/gpu-check.sh --short``, ``bench.commands.gpu_check``) as a dry run on a machine
without a GPU: it prints the time it plans for each stage from the H200's timings, skips the GPU stages with their
reason and writes the folder layout a reference folder keeps. On a GPU machine its stages run for real (the GPU
check itself, not this test)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.commands import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_the_plan_comes_from_the_h200_timings():
    reference = gpu_check.reference_seconds(ROOT / gpu_check.REFERENCE)
    assert reference["env"] > 0 and reference["tests"] > 0  # the committed H200 reference
    planned = gpu_check.plan(reference, tests=40, forms=3)
    assert list(planned) == list(gpu_check.STAGES)
    assert planned["env"][0] == reference["env"]
    assert planned["tests"][0] == pytest.approx(reference["tests"] / 161 * 40)
    assert sum(s for s, _ in planned.values()) < gpu_check.LIMIT_S


@pytest.mark.skipif(torch.cuda.is_available(), reason="a dry run is what a machine without a GPU makes")
def test_a_dry_run_skips_the_gpu_stages_and_writes_the_reference_layout(tmp_path):
    out = tmp_path / "short"
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh"), "--short", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env={**__import__("os").environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== plan (" in done.stdout and "planned" in done.stdout
    rows = [line.split("\t") for line in (out / "status.tsv").read_text().splitlines()]
    assert rows[0] == ["stage", "exit", "seconds", "planned"]
    assert [r[0] for r in rows[1:]] == list(gpu_check.STAGES) and all(r[1] == "0" for r in rows[1:])
    for stage in gpu_check.GPU_STAGES:
        assert (out / f"{stage}.log").read_text().startswith("skipped: no CUDA device"), stage
    assert "commit " in (out / "env.log").read_text() and (out / "clocks-before.txt").exists()
