"""Instructions per training step: a figure that another process on the machine cannot move.

Each cell's step is counted under valgrind's callgrind in a fresh process, by torch.utils.benchmark's
``Timer.collect_callgrind``: the cell is made ready and warmed (a compiled form compiles there) with
callgrind's collection off, so imports and set-up never enter the count; then ``repeats`` blocks of
``steps`` steps are counted, each over the cell's first batches already in memory. A step's figure is
a block's count over ``steps``; ``instr_spread`` is how far the blocks differ (a step that does the same
work every time reads 0). Counts are taken at one torch thread: valgrind runs threads one at a time,
and a thread pool's spinning would count as work. Instructions are blind to memory stalls, cache misses
and threading: they tell that a form does more work, not how long it takes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import UserError
from bench.grid import Cell, parse_label, skip_reason
from bench.runs.status import Status

COUNT_COLUMNS = ["instr_per_step", "instr_spread", "count_steps", "count_s", "top_functions"]
TOOLS = ("valgrind", "callgrind_annotate")
ROOT = Path(__file__).resolve().parent.parent  # the folder that holds bench/ and impls/
START_ENV = "LINBENCH_CALLGRIND_START"  # the counted process switches callgrind's instrumentation on with this library
START_SOURCE = """#include "callgrind.h"
void linbench_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }
"""
# torch's Timer starts valgrind with --instr-atstart=yes: the interpreter's and torch's start-up instrumented, a
# minute of a count's two. This valgrind, first on the counted process's PATH, starts it with instrumentation off;
# prepared_step switches it on once the step is warm, before the first counted block.
VALGRIND_SHIM = """#!/bin/sh
# linbench: valgrind with callgrind's instrumentation off at the start (switched on before counting)
for arg do
    shift
    [ "$arg" = --instr-atstart=yes ] && arg=--instr-atstart=no
    set -- "$@" "$arg"
done
exec {valgrind} "$@"
"""
# torch's counted process asks `callgrind_control --stat` (every callgrind process of the machine) whether it runs
# under callgrind: with two counts at once each then waits on the other's answer, and one found itself missing. This
# one, also first on PATH, asks about the process that calls it alone.
CONTROL_SHIM = """#!/bin/sh
# linbench: callgrind_control about its caller's process only
exec {control} "$@" "$PPID"
"""
# valgrind 3.19 runs no AVX-512: torch's kernels, and the code a compiled form generates, use AVX2 when counted
ISA, MARCH = "avx2", "x86-64-v3"


def valgrind_missing() -> str | None:
    """Why instructions cannot be counted here, or None."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"{' and '.join(missing)} not found: instruction counts need valgrind (apt-get install valgrind; "
                "scripts/setup.sh installs it where it can)")
    return None


def count_reason(cell: Cell) -> str | None:
    """Why a cell's instructions are not counted, or None."""
    if cell.device != "cpu":
        return "instructions are counted on the CPU only (valgrind does not see a GPU's work)"
    return skip_reason(cell)


def one_thread(cell: Cell) -> Cell:
    """The cell as it is counted: at one torch thread."""
    return dataclasses.replace(cell, threads=1)


def prepared_step(label: str, seed: int = 0, data_dir: str | None = None):
    """The cell's step, warmed, as a call that takes the next of its first batches (run inside valgrind)."""
    import itertools

    from bench.timing.cell import CellBench, Settings

    bench = CellBench(parse_label(label), Settings(seed=seed, data_dir=data_dir))
    bench.warm()
    batches = itertools.cycle(bench.device_batches())
    bench.close()
    if os.environ.get(START_ENV):  # instrumentation from here on (outside valgrind: does nothing)
        import ctypes

        ctypes.CDLL(os.environ[START_ENV]).linbench_start_instrumentation()
    return lambda: bench.form.step(*next(batches))


def late_start() -> Path | None:
    """A folder with the start-instrumentation library, the valgrind that starts without it and the
    ``callgrind_control`` that asks about its caller alone, built once (a C compiler and callgrind.h, torch's copy,
    needed); None where it cannot be built: then a count instruments the start-up too, the same figure, slower,
    and two counts at once may find one of them not under callgrind."""
    import hashlib
    import tempfile

    import torch

    from bench.data import cache_dir

    valgrind, cc = shutil.which("valgrind"), shutil.which("cc") or shutil.which("gcc")
    control = shutil.which("callgrind_control")
    if not (valgrind and cc and control):
        return None
    headers = Path(torch.__file__).parent / "utils" / "benchmark" / "utils" / "valgrind_wrapper"  # callgrind.h
    key = hashlib.sha256(f"{START_SOURCE}{VALGRIND_SHIM}{CONTROL_SHIM}{valgrind}{control}".encode()).hexdigest()[:12]
    folder = cache_dir() / f"callgrind-{key}"
    if (folder / "start.so").exists():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            (Path(tmp) / "start.c").write_text(START_SOURCE)
            done = subprocess.run([cc, "-shared", "-fPIC", "-O1", f"-I{headers}",
                                   "-o", f"{tmp}/start.so", f"{tmp}/start.c"], capture_output=True)
            if done.returncode:
                return None
            for name, text in (("valgrind", VALGRIND_SHIM.format(valgrind=valgrind)),
                               ("callgrind_control", CONTROL_SHIM.format(control=control))):
                (Path(tmp) / name).write_text(text)
                (Path(tmp) / name).chmod(0o755)
            for name in ("valgrind", "callgrind_control", "start.so"):  # start.so last: ready once it is there
                os.replace(Path(tmp) / name, folder / name)
    except OSError:
        return None
    return folder


_entered = 0  # child_environment's depth: the pool's threads share the one it sets


@contextlib.contextmanager
def child_environment():
    """The counted process: this interpreter first on PATH (the Timer starts ``python``), this source tree
    importable, Python's hashing fixed and one OpenMP thread, so two counts of one cell are alike; code
    generated for AVX2 in a cache of its own (torch's shared cache mixes up code made for other ISAs). Set
    once around every count of a call (threads share ``os.environ``)."""
    global _entered
    if _entered:
        yield
        return
    saved, _entered = dict(os.environ), 1
    late = late_start()
    if late:
        os.environ.update({START_ENV: str(late / "start.so")})
    os.environ.update(PATH=os.pathsep.join(str(p) for p in (late, Path(sys.executable).parent, saved.get("PATH"))
                                           if p),
                      PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), saved.get("PYTHONPATH")) if p),
                      PYTHONHASHSEED="0", OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY=ISA,
                      TORCHINDUCTOR_CACHE_DIR=str(Path.home() / ".cache" / "linbench" / f"inductor-{MARCH}"))
    if platform.machine() == "x86_64":
        os.environ["TORCHINDUCTOR_CPP_MARCH"] = MARCH
    try:
        yield
    finally:
        _entered = 0
        os.environ.clear()
        os.environ.update(saved)


def _setup(cell: Cell, seed: int, data_dir: str | None) -> str:
    """The code that makes the cell's warmed step, ``step``, in the counted process (and in :func:`prime`)."""
    return (f"from bench.signals.callgrind import prepared_step\n"
            f"step = prepared_step({one_thread(cell).label()!r}, {seed!r}, {data_dir!r})")


def _why(text: str) -> str:
    """The line of a failed child's output that says why: valgrind's reason, or the Python exception."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for marker in ("Unrecognised instruction", "Process terminating", "Error:", "Error "):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1].split("== ", 1)[-1]
    own = [line for line in lines if not line.startswith("==")]
    return (own or lines or ["no output"])[-1]


def _top(stats, most: int = 3) -> str:
    """The functions with the most instructions of their own, as "share% function" (library paths cut)."""
    counts = stats.as_standardized().stats(inclusive=False)
    total = sum(c for c, _ in counts) or 1
    return "; ".join(f"{100 * c / total:.0f}% {name.split(':', 1)[-1][:60]}" for c, name in list(counts)[:most])


def count_cell(cell: Cell, steps: int = 16, repeats: int = 2, seed: int = 0, data_dir: str | None = None) -> dict:
    """One cell's counts (:data:`COUNT_COLUMNS`), counted at one thread in a fresh process under callgrind."""
    from impls.common import quiet

    with quiet():
        from torch.utils.benchmark import Timer
    start = time.perf_counter()
    try:
        with child_environment():
            blocks = Timer("step()", setup=_setup(cell, seed, data_dir), num_threads=1).collect_callgrind(
                number=steps, repeats=repeats, collect_baseline=False)
    except OSError as e:
        raise RuntimeError(f"callgrind failed for {one_thread(cell).label()}: {_why(str(e))}") from None
    per_step = sorted(b.counts(denoise=False) / steps for b in blocks)
    middle = per_step[len(per_step) // 2]
    return dict(instr_per_step=middle, instr_spread=(per_step[-1] - per_step[0]) / middle, count_steps=steps,
                count_s=time.perf_counter() - start, top_functions=_top(blocks[0]))


def prime(cell: Cell, seed: int = 0, data_dir: str | None = None) -> None:
    """Warm the cell natively first, in a process like the counted one, so a compiling form finds its code
    in torch's on-disk caches and compiles in seconds under valgrind, not minutes."""
    done = subprocess.run([sys.executable, "-c", _setup(cell, seed, data_dir)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{one_thread(cell).label()} failed before counting: "
                           f"{_why(done.stderr) or f'exit status {done.returncode}'}")


def count_one(cell: Cell, steps: int = 16, seed: int = 0, data_dir: str | None = None) -> dict:
    """:func:`count_cell` after :func:`prime` for a compiling form; a form slow per sample (one with a
    sample cap: the pure-Python loop) is counted over 2 steps a block."""
    import impls

    with child_environment():
        if hasattr(impls.form_class(cell.model, cell.form), "compile_log"):
            prime(cell, seed, data_dir)
        capped = impls.sample_cap(cell.model, cell.form) is not None
        return count_cell(cell, min(steps, 2) if capped else steps, seed=seed, data_dir=data_dir)


def count_cells(cells: list[Cell], steps: int = 16, jobs: int = 1, seed: int = 0, data_dir: str | None = None,
                done=None) -> list[dict]:
    """Every cell's row: its axes (at one thread), ``status`` (ok, skipped, error), ``reason`` and the counts.
    ``jobs`` cells are counted at a time (valgrind runs one thread, so one job per core fills a machine);
    ``done(row)`` is called as each finishes."""
    if why := valgrind_missing():
        raise UserError(why)
    if steps <= 0 or jobs <= 0:
        raise UserError(f"--steps and --jobs must be positive, got {steps} and {jobs}")
    cells = list(dict.fromkeys(one_thread(c) for c in cells))
    reasons = {c: count_reason(c) for c in cells}

    def one(cell: Cell) -> dict:
        row = dict(cell.as_dict(), status=Status.OK, reason="")
        if reasons[cell]:
            row.update(status=Status.SKIPPED, reason=reasons[cell])
        else:
            try:
                row.update(count_one(cell, steps, seed, data_dir))
            except RuntimeError as e:
                row.update(status=Status.ERROR, reason=str(e))
        if done:
            done(row)
        return row

    with child_environment(), ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(one, cells))
