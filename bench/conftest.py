"""pytest-benchmark's machine info gains what a PyTorch result needs: torch, CUDA, GPU, threads.

The commit is in pytest-benchmark's own ``commit_info``; the run's time, commit and dirty flag stay
out of ``machine_info``, or every ``--benchmark-compare`` would warn that the machine changed.
"""

PER_RUN = ("time", "commit", "dirty")


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.grid import front_end_cells
    from bench.runs.meta import environment

    machine_info["linbench"] = {k: v for k, v in environment().items() if k not in PER_RUN}
    # the counts the cells are timed at (LINBENCH_THREADS), not the process's count of the moment (a cell sets it)
    machine_info["linbench"]["threads"] = sorted({c.threads for c in front_end_cells()})
