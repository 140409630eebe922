"""Run metadata: commit, time, versions, machine, threads; and the device peak probe (the roofline)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import torch

import impls
from bench.timer import sync, time_autorange

REPO = Path(__file__).resolve().parent.parent


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Everything a result needs to be compared honestly: versions, machine, threads, commit."""
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        **impls.compiler_versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "host": platform.node(),
        "platform": platform.platform(),
    }


def probe_peaks(device: str, quick: bool = False) -> dict:
    """Measured peaks of ``device`` in this run: a large fp32 GEMM (GFLOP/s) and a large copy (GB/s)."""
    dev = torch.device(device)
    n = 4096 if dev.type == "cuda" else (1024 if quick else 2048)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    gemm = time_autorange(lambda: torch.mm(a, b), min_run_time=0.2 if quick else 0.5)
    a = b = None  # free the GEMM's inputs before the copy's buffers
    size = (1 << 28 if dev.type == "cuda" else 1 << 26)  # floats: 1 GiB on GPU, 256 MiB on CPU
    src, dst = torch.empty(size, device=dev).normal_(), torch.empty(size, device=dev)
    copy = time_autorange(lambda: dst.copy_(src), min_run_time=0.2 if quick else 0.5)
    src = dst = None
    sync(dev)
    return {"gflops": 2 * n**3 / gemm.median / 1e9, "gbps": 2 * 4 * size / copy.median / 1e9,
            "gemm_n": n, "copy_bytes": 4 * size}
