"""Run metadata: commit, time, versions, machine, threads; and the device peak probe (the roofline)."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import impls
from bench.timing.timer import sync, time_autorange

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


def torchvision_version() -> str:
    """torchvision's ``__version__`` (with its local part, e.g. ``+cu130``), read from its ``version.py`` unless it
    is imported already: importing it imports ``torch._dynamo`` (2 s), which a run of eager forms never needs."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"].__version__
    try:
        text = (Path(importlib.util.find_spec("torchvision").origin).parent / "version.py").read_text()
        return re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", text, re.M).group(1)
    except (AttributeError, TypeError, OSError):  # no such file, or no such line in it: the installed version
        return importlib.metadata.version("torchvision")


def environment() -> dict:
    """Everything a result needs to be compared honestly: versions, machine, threads, commit."""
    cuda = torch.cuda.is_available()
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "cuda": torch.version.cuda,
        **impls.compiler_versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "host": platform.node(),
        "platform": platform.platform(),
    }


def probe_peaks(device: str, quick: bool = False, precisions=("fp32",)) -> dict:
    """Measured peaks of ``device`` in this run: a large GEMM (GFLOP/s; ``gflops`` in fp32, ``gflops_<p>`` in
    each other precision of ``precisions`` the device runs, e.g. bf16, amp_bf16's bfloat16 matmuls, tf32's
    TF32 tensor cores) and a large copy (GB/s). Below fp32 the faster of two layouts, ``a @ b`` and
    ``a @ b.T``: on a CPU without bfloat16 instructions oneDNN runs the first 10-35x slower than the second
    (0.3-1 against 10 GFLOP/s on the 2-core EPYC), as ``nn.Linear`` computes the second."""
    from impls.precision import PRECISIONS, computing

    dev = torch.device(device)
    n = 4096 if dev.type == "cuda" else (1024 if quick else 2048)
    out = {}
    for name in dict.fromkeys(("fp32", *precisions)):
        p = PRECISIONS[name]
        if dev.type not in p.devices:
            continue
        a, b = (torch.randn(n, n, device=dev).to(p.compute if p.name != "tf32" else torch.float32)
                for _ in range(2))
        with computing(SimpleNamespace(device=dev.type, precision=name)):
            gemm = min((time_autorange(lambda a=a, b=b: torch.mm(a, b), min_run_time=0.2 if quick else 0.5)
                        for b in ((b,) if name == "fp32" else (b, b.t()))), key=lambda t: t.median)
        out["gflops" if name == "fp32" else f"gflops_{name}"] = 2 * n**3 / gemm.median / 1e9
    a = b = None  # free the GEMM's inputs before the copy's buffers
    size = (1 << 28 if dev.type == "cuda" else 1 << 26)  # floats: 1 GiB on GPU, 256 MiB on CPU
    src, dst = torch.full((size,), 0.5, device=dev), torch.empty(size, device=dev)  # every page written (a copy's
    # speed does not depend on the values; filling it with normal_ took 0.7 s of a 3 s probe on 2 cores)
    copy = time_autorange(lambda: dst.copy_(src), min_run_time=0.2 if quick else 0.5)
    src = dst = None
    sync(dev)
    return {**out, "gbps": 2 * 4 * size / copy.median / 1e9, "gemm_n": n, "copy_bytes": 4 * size}


def roofline_s(spec, n: int, peaks: dict, precision: str = "fp32") -> float:
    """The roofline's least seconds of a step of ``spec`` on ``n`` examples in ``precision``: its FLOPs at the
    device's GEMM peak in that precision (fp32's where none was probed), its bytes at the copy peak."""
    from impls.precision import PRECISIONS

    flops, bytes_ = spec.cost(n, PRECISIONS[precision].storage.itemsize)
    gflops = peaks.get(f"gflops_{precision}", peaks["gflops"])
    return max(flops / (gflops * 1e9), bytes_ / (peaks["gbps"] * 1e9))
