"""pytest-benchmark's machine info gains what a PyTorch result needs: torch, CUDA, GPU, threads, commit."""


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.meta import environment

    machine_info["linbench"] = environment()
