import signal
import subprocess
import sys

import pytest
import torch

import impls
from bench.data import fashion_mnist_available


def pytest_configure(config):
    config.addinivalue_line("markers", "data: needs the real Fashion-MNIST")


@pytest.fixture(scope="module")
def busy_core():
    """One core kept busy by another process for the module's tests that judge speed: a spinner of the tests' own,
    unless others already keep about a core busy (e.g. the suite run beside a spinner), which is the same load."""
    from bench.timing.machine_load import machine_load

    load = machine_load(1.0)
    if load["others"] * load["cores"] >= 0.8:
        yield None
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield spinner
    spinner.kill()
    spinner.wait()


@pytest.fixture(autouse=True)
def torch_threads():
    """Each test starts at torch's thread count of the session: a test that applies a cell (``t1``) leaves the
    process's count as it found it, so later tests' default cells keep the machine's own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_data():
    """Skip (with the reason) where the real Fashion-MNIST cannot be had offline."""
    reason = fashion_mnist_available()
    if reason:
        pytest.skip(f"real Fashion-MNIST unavailable: {reason}")


def skip_if_unavailable(model, form, device):
    reason = impls.unavailable(model, form, device)
    if reason:
        pytest.skip(f"{model}/{form}/{device}: {reason}")


ALL_CELLS = [pytest.param(m, f, d, id=f"{m}-{f}-{d}") for m, f in impls.entries() for d in impls.DEVICES]



def default_sigint() -> None:
    """``preexec_fn`` of a child a test sends SIGINT: SIGINT takes its default action there (Python's
    KeyboardInterrupt), even when the suite runs with SIGINT ignored (``nohup make test &``), which a child
    would otherwise inherit and keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(capsys, *args) -> tuple[int, str]:
    """``linbench`` in this process: (exit status, stderr)."""
    from bench.cli import main

    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err
