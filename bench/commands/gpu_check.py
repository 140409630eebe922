"""The short GPU check (``scripts/gpu-check.sh --short [OUT_DIR]``): what the epoch forms do on a GPU, in one folder
ready to commit as ``reports/reference-gpu-<card>-short/``, in at most 4 minutes of a cold H100.

Stages, each into ``OUT/<stage>.log`` and a row of ``OUT/status.tsv`` (stage, exit, seconds, planned seconds):

- ``env``: the commit and whether the tree is clean, versions, ``nvidia-smi -q -d CLOCK,PERFORMANCE,POWER``
  (``clocks-before.txt``);
- ``build``: the CUDA extension loaded: built, or reused from ``LINBENCH_EXTENSIONS_DIR`` (a build made beforehand
  for the same torch, CUDA and arch list: ``TORCH_CUDA_ARCH_LIST=9.0+PTX`` on a CPU machine with that torch, the
  folder carried along); its registers per kernel (``cuobjdump --dump-resource-usage``, ``registers.txt``);
- ``tests``: the GPU tests of the epoch forms (tests/test_epochs.py, the epoch and gather tests of test_kernels.py);
- ``equal``: ``equal.csv``: two runs of each epoch form equal bit for bit, the forms equal to one another bit
  for bit, a graph replayed on a new epoch order against the CPU reference, a bad label and a bad index giving NaN;
- ``figures``: ``figures.csv``: the resident softmax epoch at batch 256 of ``module``, ``compiled``, each fused
  form and ``triton``, by wall clock and by CUDA events, with each one's ratio to ``module``; ``kernels.csv``: the
  kernels of one epoch of each fused form from the profiler, L2 warm and cold;
- ``clocks``: ``nvidia-smi`` again (``clocks-after.txt``).

Without a GPU it is a dry run: every stage that needs one is skipped with its reason (exit 0, a ``skipped`` line);
either way it prints first the time it plans for each stage, from the last H200 timings
(``reports/reference-gpu-h200/gpu-check/status.tsv``).
"""
from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from bench.defaults import GPU_CHECK_EPOCH_FORMS, GPU_CHECK_FIGURE_FORMS

REFERENCE = Path("reports/reference-gpu-h200/gpu-check/status.tsv")
STAGES = ("env", "build", "tests", "equal", "figures", "clocks")
GPU_STAGES = ("tests", "equal", "figures", "clocks")
TESTS = ["tests/test_epochs.py", "tests/test_kernels.py", "-k", "gpu or epoch or gather or graph"]
EPOCH_FORMS, FIGURE_FORMS = GPU_CHECK_EPOCH_FORMS, GPU_CHECK_FIGURE_FORMS
LIMIT_S = 240


def reference_seconds(path: Path = REFERENCE) -> dict[str, float]:
    """Stage -> seconds of the last full check on the H200 (empty when the file is not there)."""
    if not path.exists():
        return {}
    rows = csv.DictReader(path.read_text().splitlines(), delimiter="\t")
    return {r["stage"]: float(r["seconds"]) for r in rows}


def plan(reference: dict[str, float], tests: int, forms: int) -> dict[str, tuple[float, str]]:
    """Stage -> (planned seconds, how): each from the H200's full check: its env stage; its tests stage per test
    (161 tests) times the tests selected here; its grid stage per cell (42 cells) per epoch timed or compared; its
    profile stage per form (8 forms) for each profiled form, twice (L2 warm and cold)."""
    env, tests_s = reference.get("env", 34.0), reference.get("tests", 102.0)
    cell, profile = reference.get("grid", 76.0) / 42, reference.get("profile", 30.0) / 8
    return {"env": (env, "the H200's env stage"),
            "build": (0.0, "reused from LINBENCH_EXTENSIONS_DIR (else about 90 s of nvcc)"),
            "tests": (tests_s / 161 * tests, f"{tests} tests at the H200's {tests_s / 161:.2f} s a test"),
            "equal": (cell * (2 * forms + 3), f"{2 * forms + 3} epochs at the H200's {cell:.1f} s a grid cell"),
            "figures": (cell * len(FIGURE_FORMS) + 2 * profile * forms,
                        f"{len(FIGURE_FORMS)} cells, then {forms} forms profiled twice at {profile:.1f} s"),
            "clocks": (2.0, "one nvidia-smi")}


def gpu_reason() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device on this machine (a dry run)"


def run_command(cmd: list[str]) -> int:
    """``cmd`` with its output into this stage's log (stdout here); 127 if it is not installed."""
    if not shutil.which(cmd[0]):
        print(f"{cmd[0]}: not found")
        return 0
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout + done.stderr)
    return done.returncode


def env_stage(out: Path) -> int:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    print(f"commit {commit or 'unknown'}\ntree: {'dirty: a reference comes from a clean commit' if dirty else 'clean'}")
    import torch

    print(f"python {sys.version.split()[0]} torch {torch.__version__} cuda {torch.version.cuda}")
    with redirect_stdout(io.StringIO()) as clocks:
        run_command(["nvidia-smi", "-q", "-d", "CLOCK,PERFORMANCE,POWER"])
    (out / "clocks-before.txt").write_text(clocks.getvalue())
    return 0


def build_stage(out: Path) -> int:
    from impls import cuda

    if reason := cuda.toolkit_missing():
        print(f"skipped: {reason}")
        return 0
    start = time.perf_counter()
    ext = cuda.extension()
    seconds = time.perf_counter() - start
    print(f"extension {ext.__file__} ready in {seconds:.1f} s (arch list {cuda.chosen_arch_list()})")
    with redirect_stdout(io.StringIO()) as usage:
        run_command(["cuobjdump", "--dump-resource-usage", ext.__file__])
    (out / "registers.txt").write_text(usage.getvalue())
    return 0


def tests_stage(out: Path) -> int:
    import pytest

    return int(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *TESTS]))


def clocks_stage(out: Path) -> int:
    with redirect_stdout(io.StringIO()) as clocks:
        code = run_command(["nvidia-smi", "-q", "-d", "CLOCK,PERFORMANCE,POWER"])
    (out / "clocks-after.txt").write_text(clocks.getvalue())
    return code


def _stage_fn(name: str):
    if name in ("equal", "figures"):
        from bench.commands import gpu_figures

        return getattr(gpu_figures, f"{name}_stage")
    return globals()[f"{name}_stage"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(args[0] if args else f"results/gpu-check-short-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    import impls

    forms = [f for f in EPOCH_FORMS if f in impls.FORM_MODULES]
    import pytest

    with redirect_stdout(io.StringIO()) as collected, redirect_stderr(io.StringIO()):
        pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *TESTS])
    tests = sum(1 for line in collected.getvalue().splitlines() if "::" in line)
    planned = plan(reference_seconds(), tests, len(forms))
    total = sum(s for s, _ in planned.values())
    print(f"== plan ({total:.0f} s planned of the {LIMIT_S} s limit, from {REFERENCE}):")
    for name in STAGES:
        print(f"   {name:8s} {planned[name][0]:6.1f} s  {planned[name][1]}")
    reason = gpu_reason()
    status = out / "status.tsv"
    status.write_text("stage\texit\tseconds\tplanned\n")
    failed = 0
    for name in STAGES:
        start, log = time.perf_counter(), io.StringIO()
        with redirect_stdout(log):
            if name in GPU_STAGES and reason:
                print(f"skipped: {reason}")
                code = 0
            else:
                try:
                    code = _stage_fn(name)(out)
                except Exception as e:  # noqa: BLE001 - a stage that breaks is its row, and the next one runs
                    print(f"error: {e.__class__.__name__}: {e}")
                    code = 1
        seconds = time.perf_counter() - start
        (out / f"{name}.log").write_text(log.getvalue())
        with status.open("a") as f:
            f.write(f"{name}\t{code}\t{seconds:.1f}\t{planned[name][0]:.1f}\n")
        first = log.getvalue().strip().splitlines()[:1]
        print(f"== {name}: exit {code} in {seconds:.1f} s (planned {planned[name][0]:.0f} s)"
              + (f": {first[0]}" if first and first[0].startswith(("skipped", "error")) else ""))
        failed += code != 0
    print(f"== status ({status})")
    print(status.read_text(), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
