"""The ``cuda`` form: hand-written CUDA C++ kernels (impls/fused_step.cu) fusing d2l ch. 3's whole step.

The scratch objective of d2l 3.2/3.6 (linreg mean ``(y_hat - y)**2 / 2``, softmax mean stable
cross-entropy) and its SGD update, in fp32: linreg in 1 launch per step, softmax in 2 (logits,
softmax, loss and dO per row; then ``W -= lr * X^T dO`` and ``b -= lr * sum(dO)``). The steps are the
custom ops ``linbench::linreg_step`` / ``linbench::softmax_step``: they update the weights in place
and return the loss; lr is a device tensor, so nothing syncs. Each op also has a CPU reference in
plain torch (same semantics, same argument checks) and a fake implementation for torch.compile and
``opcheck``. On the GPU a class label outside 0..k-1 is not checked on the host (that would sync
every step): the kernel makes that row's loss and gradient NaN, so the step's loss and the weights show it.

On the resident loader's epochs (the ``train_epoch`` hook) a step is ``linbench::<model>_gather_step``: the
batch's rows are gathered by index from the split on the device (uint8 pixels divided by 255 inside the
kernel), so no loader kernel runs between steps. ``linbench::<model>_epoch`` runs a whole epoch in one launch
(the ``cuda_epoch`` form); ``linbench::softmax_cluster_epoch`` runs it on one thread-block cluster (the
``cuda_cluster`` form).

The extension is built on first use with ``torch.utils.cpp_extension.load`` for the compute
capabilities of the visible GPUs plus PTX of the newest (``TORCH_CUDA_ARCH_LIST`` overrides;
``DEFAULT_ARCH_LIST`` without a GPU), and cached per torch version, CUDA version and arch list under
``LINBENCH_EXTENSIONS_DIR`` (default: ``torch_extensions`` in the user cache directory, beside the data).
"""
from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from impls.common import FusedStepForm, check_step_args, flat, quiet

SOURCE = Path(__file__).with_name("fused_step.cu")
DEFAULT_ARCH_LIST = "8.0+PTX"  # only for a build without a GPU: sm_80 code, PTX for every newer GPU
Capability = tuple[int, int]


def cache_dir() -> Path:
    """The user cache directory, as ``bench.data.cache_dir``: ``LINBENCH_CACHE`` or ``$XDG_CACHE_HOME/linbench``."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("LINBENCH_CACHE") or xdg / "linbench")


def extensions_dir() -> Path:
    """Where built extensions are kept: ``LINBENCH_EXTENSIONS_DIR`` or ``<cache_dir>/torch_extensions``."""
    return Path(os.environ.get("LINBENCH_EXTENSIONS_DIR") or cache_dir() / "torch_extensions")


def staged(source: Path, build: Path) -> Path:
    """``source`` copied into ``build`` (rewritten only when its text changed): the build compiles that copy, so
    every checkout with the same source shares one build, where the source's own path would make ninja rebuild
    whenever another checkout had built last."""
    copy = build / "src" / source.name
    text = source.read_bytes()
    if not copy.exists() or copy.read_bytes() != text:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}")
        tmp.write_bytes(text)
        os.replace(tmp, copy)
    return copy


def build_dir(archs: str) -> Path:
    """This build's folder, keyed by torch version, torch's CUDA version and the arch list."""
    key = f"torch{torch.__version__}-cuda{torch.version.cuda}-sm{archs.replace('.', '')}"
    return extensions_dir() / re.sub(r"[^\w.+-]", "_", key)


def arch_list(capabilities: list[Capability], newest: Capability | None = None) -> str:
    """TORCH_CUDA_ARCH_LIST for GPUs of these capabilities: each one (capped at ``newest``, the newest
    torch supports), PTX of the highest for forward compatibility; ``DEFAULT_ARCH_LIST`` for none."""
    archs = sorted({min(c, newest) if newest else c for c in capabilities})
    return ";".join(f"{M}.{m}" for M, m in archs) + "+PTX" if archs else DEFAULT_ARCH_LIST


def serves(archs: str, capability: Capability) -> bool | None:
    """Whether a build for the arch list ``archs`` runs on a GPU of ``capability`` (None: an entry it
    cannot judge, e.g. a name such as "Hopper"). Code for X.Y runs on X.Z for Z >= Y (``X.Ya``: on
    X.Y only); PTX for X.Y runs on every capability >= X.Y.
    """
    ok = False
    for entry in filter(None, re.split(r"[;\s]+", archs)):
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", entry)
        if not match:
            return None
        arch, suffix, ptx = (int(match[1]), int(match[2])), match[3], match[4]
        code = arch == capability if suffix == "a" else arch[0] == capability[0] and arch[1] <= capability[1]
        ok = ok or code or bool(ptx and not suffix and arch <= capability)
    return ok


def arch_problem(archs: str, devices: list[tuple[str, Capability]], buildable: set[Capability]) -> str | None:
    """Why a build for the arch list ``archs`` cannot serve one of ``devices`` (name, capability), or None.

    ``buildable``: the capabilities nvcc can build for (empty: unknown, not checked).
    """
    for i, (name, (M, m)) in enumerate(devices):
        if serves(archs, (M, m)) is False:
            return f"GPU {i} ({name}, sm_{M}{m}) is not in TORCH_CUDA_ARCH_LIST={archs}: add {M}.{m} or unset it"
    for M, m in sorted({(int(M), int(m)) for M, m in re.findall(r"(\d+)\.(\d+)", archs)}):
        if buildable and (M, m) not in buildable:
            users = ", ".join(f"GPU {i} ({name})" for i, (name, cap) in enumerate(devices) if cap == (M, m))
            return (f"this nvcc cannot build sm_{M}{m}{f' for {users}' if users else ''} "
                    f"(TORCH_CUDA_ARCH_LIST={archs}): use a CUDA toolkit that supports it")
    return None


def _cpp_extension():
    """torch's extension builder, imported without its warning that a machine without a GPU has no CUDA
    runtime (nothing to act on: the toolkit's root is chosen by :func:`cuda_home`)."""
    with quiet():
        from torch.utils import cpp_extension
    return cpp_extension


def cuda_home() -> str:
    """The toolkit's root: ``CUDA_HOME``, else ``/usr/local/cuda`` where it exists, else torch's guess
    (which follows ``nvcc`` on the PATH and can name ``/usr/local`` for a linked ``/usr/local/bin/nvcc``)."""
    cpp_extension = _cpp_extension()

    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    return "/usr/local/cuda" if os.path.isdir("/usr/local/cuda") else (cpp_extension.CUDA_HOME or "/usr/local/cuda")


def nvcc() -> Path:
    return Path(cuda_home()) / "bin" / "nvcc"


@cache
def nvcc_info(path: Path) -> tuple[str | None, set[Capability]]:
    """(release, e.g. "13.0", or None; the capabilities it can build for, empty when it cannot say)."""
    def run(*args):
        try:
            return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    release = re.search(r"release (\d+\.\d+)", run("--version"))
    archs = {(int(v) // 10, int(v) % 10) for v in re.findall(r"compute_(\d+)", run("--list-gpu-arch"))}
    return release and release[1], archs


def cuda_mismatch(nvcc_release: str | None, torch_cuda: str | None) -> str | None:
    """Why an nvcc of this release cannot build for a torch built with this CUDA (majors must agree), or None."""
    if not torch_cuda:
        return "this torch was built without CUDA"
    if nvcc_release and nvcc_release.split(".")[0] != torch_cuda.split(".")[0]:
        return (f"nvcc is CUDA {nvcc_release} but torch was built with CUDA {torch_cuda}: "
                f"set CUDA_HOME to a CUDA {torch_cuda.split('.')[0]}.x toolkit")
    return None


def gpus() -> list[tuple[str, Capability]]:
    """(name, compute capability) of each visible GPU."""
    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
            for i in range(torch.cuda.device_count())]


def newest_supported() -> Capability | None:
    """The highest sm_XY this torch has kernels for (None for a CPU build)."""
    sms = [int(re.sub(r"\D", "", a)) for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
    return max(((sm // 10, sm % 10) for sm in sms), default=None)


def chosen_arch_list() -> str:
    """The arch list to build for: ``TORCH_CUDA_ARCH_LIST`` if the user set it, else the visible GPUs'."""
    user = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if user and user != "native":
        return user
    return arch_list([c for _, c in gpus()], newest_supported())


def toolkit_missing() -> str | None:
    """Why the extension cannot be built here (no nvcc, no ninja, nvcc's CUDA not torch's), or None."""
    cpp_extension = _cpp_extension()

    path = nvcc()
    if not path.is_file():
        return f"no nvcc at {path}: set CUDA_HOME to a CUDA toolkit"
    if not cpp_extension.is_ninja_available():
        return "ninja is missing: torch's extension builder needs it (pip install ninja)"
    return cuda_mismatch(nvcc_info(path)[0], torch.version.cuda)


@contextmanager
def environ(name: str, value: str):
    """``os.environ[name] = value`` inside the block only."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@cache
def extension():
    """The compiled kernels (built once per machine and arch list, then loaded from the cache)."""
    cpp_extension = _cpp_extension()

    archs = chosen_arch_list()
    build = build_dir(archs)
    try:
        build.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(f"cannot create {build} ({e.strerror}): set LINBENCH_EXTENSIONS_DIR to a writable "
                           "folder") from None
    # the build alone sees the arch list and the toolkit's root; its "no CUDA runtime" warning on a
    # machine without a GPU is nothing to act on; nvcc builds the list's targets in parallel (--threads 0)
    home, cpp_extension.CUDA_HOME = cpp_extension.CUDA_HOME, cuda_home()
    try:
        with quiet(), environ("TORCH_CUDA_ARCH_LIST", archs), environ("CUDA_HOME", cpp_extension.CUDA_HOME):
            return cpp_extension.load(name="linbench_fused_step", sources=[str(staged(SOURCE, build))],
                                      build_directory=str(build),
                                      extra_cuda_cflags=["-O3", "--threads", "0"], verbose=False)
    finally:
        cpp_extension.CUDA_HOME = home


@torch.library.custom_op("linbench::linreg_step", mutates_args=("w", "b"), device_types="cpu")
def linreg_step(w: Tensor, b: Tensor, X: Tensor, y: Tensor, lr: Tensor) -> Tensor:
    """One SGD step of linreg; updates ``w`` (d, 1) and ``b`` (1,) in place, returns the mean loss."""
    check_step_args("linbench::linreg_step", w, b, X, y, lr, torch.float32)
    res = X @ w + b - y.reshape(-1, 1)
    loss = (res * res / 2).mean()
    w -= lr * (X.T @ res) / X.shape[0]
    b -= lr * res.sum(0) / X.shape[0]
    return loss


@torch.library.custom_op("linbench::softmax_step", mutates_args=("W", "b"), device_types="cpu")
def softmax_step(W: Tensor, b: Tensor, X: Tensor, y: Tensor, lr: Tensor) -> Tensor:
    """One SGD step of softmax regression; updates ``W`` (d, k) and ``b`` (k,) in place, returns the mean loss."""
    check_step_args("linbench::softmax_step", W, b, X, y, lr, torch.int64)
    O = X @ W + b
    loss = (torch.logsumexp(O, dim=1) - O.gather(1, y.reshape(-1, 1)).squeeze(1)).mean()
    dO = torch.softmax(O, dim=1)
    dO[torch.arange(len(y)), y] -= 1.0
    dO /= X.shape[0]
    W -= lr * (X.T @ dO)
    b -= lr * dO.sum(0)
    return loss


MAX_OUT = 16  # fused_step.cu's MAX_OUT: most softmax classes (or linreg features) a thread keeps in registers
SMEM_RESERVED = 40 * 1024  # bytes of shared memory the softmax kernels keep beside W (fused_step.cu's SMEM_RESERVED)
THREADS, ROW_WARPS = 256, 8  # fused_step.cu's block size and its warps
CLUSTER_STATIC_SMEM = 4 * 1024  # the cluster kernel's own tables (3.2 KiB on sm_90), beside its dynamic memory


def chunk_of(d: int) -> int:
    """fused_step.cu's ``chunk_of``: the features of one of a logit's 32 partial sums (a multiple of 16)."""
    return ((d + 31) // 32 + 15) // 16 * 16


def cluster_smem(n: int, ctas: int, d: int, k: int, value_bytes: int) -> int:
    """fused_step.cu's ``cluster_smem``: the dynamic shared memory of the cluster epoch for batches of ``n`` rows."""
    per = 32 // ctas
    width = per * chunk_of(d)
    floats = width * k + MAX_OUT + n * per * k + n * k + n + ROW_WARPS * 32 * MAX_OUT
    return n * 8 + 4 * floats + n * width * value_bytes


def cluster_problem(props, weight: Tensor, X: Tensor, batch_size: int, rows: int) -> str | None:
    """Why the cluster epoch cannot launch on a GPU of ``props`` (``torch.cuda.get_device_properties``) with these
    arguments, or None (the checks that need no kernel: the sm version, and the shared memory of a cluster of 16,
    the least it takes; the extension then picks 16 or 8 CTAs, as this GPU can launch them)."""
    if (props.major, props.minor) < (9, 0):
        return f"{props.name} (sm_{props.major}{props.minor}) has no thread-block clusters: they need sm_90 or newer"
    n = min(batch_size, rows)
    need = cluster_smem(n, 16, X.shape[1], weight.shape[1], X.element_size()) + CLUSTER_STATIC_SMEM
    if need > props.shared_memory_per_block_optin:
        return (f"a batch of {n} rows needs {need // 1024} KiB of shared memory in each CTA of the cluster; "
                f"{props.name} gives a block {props.shared_memory_per_block_optin // 1024} KiB")
    return None


def launch_problem(weight: Tensor, X: Tensor, batch_size: int | None = None, classes: bool = True,
                   device=None) -> str | None:
    """Why fused_step.cu's kernels cannot launch on these arguments on their GPU, or None: every check a launch
    could fail (the widths a thread keeps in registers, W in shared memory, a batch's size, the cooperative
    epoch's sm version), made here, before the extension is called."""
    width = weight.shape[1] if classes else X.shape[1]
    if width > MAX_OUT:
        return f"{'W must be (d, k) with k' if classes else 'X must have features'} <= {MAX_OUT}, got {width}"
    if X.shape[0] * max(X.shape[1], weight.shape[1]) >= 2**31:
        return f"X {tuple(X.shape)} is too large"
    if batch_size is not None and not 1 <= batch_size < 2**24:
        return f"batch_size must be in 1..2^24, got {batch_size}"
    props = torch.cuda.get_device_properties(device if device is not None else X.device)
    need = weight.numel() * 4 + SMEM_RESERVED
    if classes and need > props.shared_memory_per_block_optin:
        return (f"W {tuple(weight.shape)} needs {need // 1024} KiB of shared memory; {props.name} gives a block "
                f"{props.shared_memory_per_block_optin // 1024} KiB")
    if batch_size is not None and (props.major, props.minor) < (6, 0):
        return f"{props.name} (sm_{props.major}{props.minor}) cannot launch a cooperative kernel"
    return None


def check_launch(op: str, weight: Tensor, X: Tensor, batch_size: int | None = None, classes: bool = True) -> None:
    if reason := launch_problem(weight, X, batch_size, classes):
        raise ValueError(f"{op}: {reason}")


# The arguments are checked here, in Python, before the extension is called: on an H100 (torch 2.11,
# nvcc 13) a failing TORCH_CHECK after fused_step.cu's argument loop crashed the process instead of
# raising, so the extension's own checks stay only as a last line of defence.
@linreg_step.register_kernel("cuda")
def _(w, b, X, y, lr):
    check_step_args("linbench::linreg_step", w, b, X, y, lr, torch.float32)
    check_launch("linbench::linreg_step", w, X, classes=False)
    return extension().linreg_step(w, b, X, y, lr)


@softmax_step.register_kernel("cuda")
def _(W, b, X, y, lr):
    check_step_args("linbench::softmax_step", W, b, X, y, lr, torch.int64)
    check_launch("linbench::softmax_step", W, X)
    return extension().softmax_step(W, b, X, y, lr)


@linreg_step.register_fake
@softmax_step.register_fake
def _(weight, b, X, y, lr):
    return X.new_empty((), dtype=torch.float32)


def _gathered(X: Tensor, idx: Tensor, divisor: float) -> Tensor:
    """Rows ``idx`` of ``X`` in float32, divided by ``divisor`` (as the kernels read them)."""
    return X.index_select(0, idx).to(torch.float32).div_(divisor)


def _steps(order: Tensor, batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return -(-order.shape[0] // batch_size)


def _epoch_ops(model: str, step, label_dtype: torch.dtype):
    """``linbench::<model>_gather_step`` (the step on rows ``idx`` of X, gathered and divided by ``divisor`` in the
    kernel) and ``linbench::<model>_epoch`` (those steps over ``order`` cut into batches, one launch): CPU
    references in plain torch, CUDA kernels from fused_step.cu, fake implementations for torch.compile."""
    weight = "W" if label_dtype == torch.int64 else "w"

    @torch.library.custom_op(f"linbench::{model}_gather_step", mutates_args=("weight", "b"), device_types="cpu")
    def gather_step(weight: Tensor, b: Tensor, X: Tensor, y: Tensor, idx: Tensor, divisor: float, lr: Tensor) -> Tensor:
        check_step_args(f"linbench::{model}_gather_step", weight, b, X, y, lr, label_dtype, idx)
        return step(weight, b, _gathered(X, idx, divisor), y.index_select(0, idx), lr)

    @torch.library.custom_op(f"linbench::{model}_epoch", mutates_args=("weight", "b"), device_types="cpu")
    def epoch(weight: Tensor, b: Tensor, X: Tensor, y: Tensor, order: Tensor, batch_size: int, divisor: float,
              lr: Tensor) -> Tensor:
        _steps(order, batch_size)
        check_step_args(f"linbench::{model}_epoch", weight, b, X, y, lr, label_dtype, order)
        return torch.stack([gather_step(weight, b, X, y, idx, divisor, lr) for idx in order.split(batch_size)])

    @gather_step.register_kernel("cuda")
    def _(weight, b, X, y, idx, divisor, lr):
        check_step_args(f"linbench::{model}_gather_step", weight, b, X, y, lr, label_dtype, idx)
        check_launch(f"linbench::{model}_gather_step", weight, X, classes=label_dtype == torch.int64)
        return getattr(extension(), f"{model}_gather_step")(weight, b, X, y, idx, divisor, lr)

    @epoch.register_kernel("cuda")
    def _(weight, b, X, y, order, batch_size, divisor, lr):
        _steps(order, batch_size)
        check_step_args(f"linbench::{model}_epoch", weight, b, X, y, lr, label_dtype, order)
        check_launch(f"linbench::{model}_epoch", weight, X, batch_size, classes=label_dtype == torch.int64)
        return getattr(extension(), f"{model}_epoch")(weight, b, X, y, order, batch_size, divisor, lr)

    @gather_step.register_fake
    def _(weight, b, X, y, idx, divisor, lr):
        return weight.new_empty(())

    @epoch.register_fake
    def _(weight, b, X, y, order, batch_size, divisor, lr):
        return weight.new_empty((_steps(order, batch_size),))

    gather_step.__doc__ = (f"{step.__doc__.split(';')[0]} on rows ``idx`` of X (divided by ``divisor``); "
                           f"{weight} and b in place.")
    epoch.__doc__ = f"{model} steps over ``order`` in batches of ``batch_size``; returns each step's loss (steps,)."
    return gather_step, epoch


linreg_gather_step, linreg_epoch = _epoch_ops("linreg", linreg_step, torch.float32)
softmax_gather_step, softmax_epoch = _epoch_ops("softmax", softmax_step, torch.int64)


@torch.library.custom_op("linbench::softmax_cluster_epoch", mutates_args=("W", "b"), device_types="cpu")
def softmax_cluster_epoch(W: Tensor, b: Tensor, X: Tensor, y: Tensor, order: Tensor, batch_size: int, divisor: float,
                          lr: Tensor) -> Tensor:
    """``linbench::softmax_epoch`` by one thread-block cluster on the GPU (sm_90 and up): the same steps in the same
    order, so the same bits; each step's loss (steps,). Its CPU reference is softmax_epoch's."""
    return softmax_epoch(W, b, X, y, order, batch_size, divisor, lr)


@softmax_cluster_epoch.register_kernel("cuda")
def _(W, b, X, y, order, batch_size, divisor, lr):
    op = "linbench::softmax_cluster_epoch"
    _steps(order, batch_size)
    check_step_args(op, W, b, X, y, lr, torch.int64, order)
    check_launch(op, W, X, batch_size)
    if reason := cluster_problem(torch.cuda.get_device_properties(X.device), W, X, batch_size, order.shape[0]):
        raise ValueError(f"{op}: {reason}")
    with torch.cuda.device(X.device):
        arch, ctas = extension().cluster_config(X.shape[1], W.shape[1], min(batch_size, order.shape[0]),
                                                X.dtype == torch.uint8)
    if arch < 90:
        raise ValueError(f"{op}: the CUDA extension has no sm_90 code for this GPU (its cluster kernel comes from "
                         f"compute_{arch}): rebuild it with TORCH_CUDA_ARCH_LIST=9.0+PTX")
    if not ctas:
        raise ValueError(f"{op}: this GPU cannot launch a cluster of 16 or 8 CTAs with a batch of {batch_size} rows")
    return extension().softmax_cluster_epoch(W, b, X, y, order, batch_size, divisor, lr)


@softmax_cluster_epoch.register_fake
def _(W, b, X, y, order, batch_size, divisor, lr):
    return W.new_empty((_steps(order, batch_size),))


class CudaForm(FusedStepForm):
    """The ``cuda`` form: a model's whole SGD step as the hand-written kernels of fused_step.cu; on the resident
    loader's epochs, the step that gathers its rows (uint8 pixels scaled in the kernel): 2 launches a step."""
    devices = ("cuda",)
    ops = {"squared": linreg_step, "cross_entropy": softmax_step}
    gather_ops = {"squared": linreg_gather_step, "cross_entropy": softmax_gather_step}
    owns_epoch_kernel = False  # its epoch is one cooperative launch (cuda_epoch)

    @classmethod
    def unavailable(cls, device: str) -> str | None:
        if reason := toolkit_missing():
            return reason
        return arch_problem(chosen_arch_list(), gpus(), nvcc_info(nvcc())[1])

    @classmethod
    def unsupported(cls, spec, setup=None) -> str | None:
        """The fused kernels' own limits, and on a GPU at hand whether its launch fits it (W in shared memory, the
        cooperative epoch): a cell that cannot launch is skipped with the reason, never a dead process."""
        if reason := super().unsupported(spec, setup):
            return reason
        if setup is None or torch.device(setup.device).type != "cuda" or not torch.cuda.is_available():
            return None
        weight = torch.empty((spec.widths[0], spec.widths[-1]), device="meta")
        X = torch.empty((1, spec.widths[0]), device="meta")
        return launch_problem(weight, X, 1 if cls.owns_epoch_kernel else None, spec.classes is not None,
                              device=torch.device(setup.device))

    def epoch_args(self, data) -> tuple[Tensor, Tensor]:
        """The resident split as the ops take it: X (N, d) as stored, y (N,) in the op's dtype (views, no copy)."""
        return flat(data.X), data.y.reshape(-1).to(self.label_dtype)

    def epoch_steps(self, weight: Tensor, b: Tensor, data) -> Tensor:
        """The epoch's gather steps on ``weight`` and ``b``; each step's loss, stacked."""
        X, y = self.epoch_args(data)
        op = self.gather_ops[self.spec.loss]
        return torch.stack([op(weight, b, X, y, idx, data.divisor, self.lr)
                            for idx in data.order.split(data.batch_size)])

    def train_epoch(self, data) -> Tensor:
        return self.epoch_steps(self.weight, self.b, data)


FORM = CudaForm
