"""The ``native`` form: d2l ch. 3's whole SGD step as one C++ call on the CPU (impls/native_step.cpp).

For a model of more than one layer (the MLP of d2l 4.2) the call is ``stack_form_step``: the forward GEMMs, ReLU,
log-softmax, the backward GEMMs and the in-place updates as ATen calls from C++ (no autograd graph, no optimizer,
no Python between the ops). What follows is the one-layer step.

Where it comes from: the fused step of the ``cuda`` form (impls/fused_step.cu), written for the CPU
against ATen. The objective and update are the scratch ones of d2l 3.2/3.6 (linreg mean
``(y_hat - y)**2 / 2``, softmax mean stable cross-entropy; ``param -= lr * grad``), in fp32. What it
shows: the step with the framework's per-op overhead removed. No autograd graph, no optimizer, no
Python between the ops: linreg is a loop over the rows; softmax is two BLAS calls (the logits into a
scratch buffer the form keeps, and ``W -= lr * X^T dO`` updating W in place) around two short loops
and torch's vectorized exp in place (the softmax, the loss and dO). What is left of a step is the BLAS
work, one call from Python and the 0-dim loss it returns.

The ops ``linreg_step(w, b, X, y, lr)`` and ``softmax_step(W, b, X, y, lr, scratch=None)`` update the
weights in place and return the loss; they make the checks of :func:`impls.common.check_step_args`
themselves (the same one-line ValueErrors). The form's step reaches them through ``*_form_step``,
which first makes what a loader gives ((n, 1, 28, 28) images, (n, 1) targets) the op's (n, d) and
(n,) views, in C++. They are plain extension functions, not ``torch.library`` ops: a call through
``torch.ops`` from Python alone (about 1.7 us, measured on a 2-core CPU) costs more than the whole
linreg step does (about 1 us). The form keeps W (d, k) column-major,
the memory of nn.Linear's (k, d) weight, which the ops accept beside row-major: with 10 classes both
GEMMs run 2-4x faster so on one thread.

On the resident loader's epochs (the ``train_epoch`` hook) the whole epoch is one call, ``form_epoch``: each
batch made from the split as stored by the step path's own ATen kernels (``index_select_out``, ``copy_`` to float32,
``div_`` by 255) into buffers kept for the epoch, then the same step as above on it; no Python and no allocation of
a batch between the steps. Its losses and weights equal the step path's bit for bit (a test).

The extension is built on first use with ``torch.utils.cpp_extension.load`` (the compiler in ``CXX``,
default ``c++``; torch's default flags plus ``-O3``, no ``-march=native``: a cached build may be loaded
on another CPU) and cached per torch and Python version beside the ``cuda`` form's build, under
``LINBENCH_EXTENSIONS_DIR`` (default: ``torch_extensions`` in the user cache directory). When it cannot
be built, ``unavailable()`` gives the reason in one line: no compiler, no ninja, or the compiler's first
error.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import torch

from impls.common import FusedStepForm, quiet
from impls.cuda import _cpp_extension, extensions_dir, staged

SOURCE = Path(__file__).with_name("native_step.cpp")
NAME = "linbench_native_step"
# -fopenmp: at::parallel_for in the extension is ATen's OpenMP loop only when the extension is built with OpenMP
# (without it the loop runs on one thread, whatever torch's thread count); torch's wheels use the same libgomp
CFLAGS = ["-O3", "-fopenmp"]
LDFLAGS = ["-fopenmp"]


class BuildError(RuntimeError):
    """The extension cannot be built or loaded here; the message is one line saying why."""


def build_dir() -> Path:
    """This build's folder, keyed by torch version and Python ABI (the cuda form's builds sit beside it)."""
    key = f"torch{torch.__version__}-{sys.implementation.cache_tag}-native-cpu"
    return extensions_dir() / re.sub(r"[^\w.+-]", "_", key)


def compiler() -> str:
    """The C++ compiler torch's builder runs: ``CXX``, default ``c++``."""
    return os.environ.get("CXX") or "c++"


def toolchain_missing() -> str | None:
    """Why nothing can be built here (no compiler, no ninja), or None."""
    cxx = compiler()
    words = shlex.split(cxx) or [cxx]
    if not shutil.which(words[0]):
        return f"no C++ compiler ({cxx} not found; set CXX to one)"
    if not _cpp_extension().is_ninja_available():
        return "ninja is missing: torch's extension builder needs it (pip install ninja)"
    return None


def first_error(log: str) -> str:
    """The line of a build log that says what went wrong: the compiler's or the linker's first error, else
    the first line that is not a command ninja ran."""
    commands = ("[", "FAILED:", "Error building extension")
    said = [line for line in map(str.strip, log.splitlines()) if line and not line.startswith(commands)
            and " -o " not in line]
    for pattern in (r"(fatal )?error:", r"undefined reference|cannot find -l"):
        for line in said:
            if re.search(pattern, line):
                return re.sub(r"^\S*/(?=[^/\s]+:\d+)", "", line)  # the source's name, not its build path
    return said[0] if said else "the build failed without a message"


def build(source: Path = SOURCE, directory: Path | None = None, name: str = NAME):
    """The extension module built from ``source`` (or loaded from the cache); BuildError saying why not."""
    if reason := toolchain_missing():
        raise BuildError(reason)
    directory = directory or build_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create {directory} ({e.strerror}): set LINBENCH_EXTENSIONS_DIR to a "
                         "writable folder") from None
    cpp_extension = _cpp_extension()
    try:
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cpp_extension.load(name=name, sources=[str(staged(source, directory))],
                                      build_directory=str(directory),
                                      extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, with_cuda=False,
                                      verbose=False)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"cannot build {source.name}: {first_error(str(e))}") from None
    except ImportError as e:
        raise BuildError(f"the built {name} does not load: {first_error(str(e))}") from None


@cache
def _built() -> tuple[object | None, str | None]:
    try:
        return build(), None
    except BuildError as e:
        return None, str(e)


def extension():
    """The built extension (built once per machine, then loaded from the cache); BuildError if it cannot be."""
    ext, reason = _built()
    if ext is None:
        raise BuildError(reason)
    return ext


def build_problem() -> str | None:
    """Why the extension cannot be had here (the build is tried once per process), or None."""
    return _built()[1]


def linreg_step(w: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """One SGD step of linreg; updates ``w`` (d, 1) and ``b`` (1,) in place, returns the mean loss."""
    return extension().linreg_step(w, b, X, y, lr)


def softmax_step(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lr: torch.Tensor,
                 scratch: torch.Tensor | None = None) -> torch.Tensor:
    """One SGD step of softmax regression; updates ``W`` (d, k) and ``b`` (k,) in place, returns the mean
    loss. ``scratch``: a float32 tensor whose storage holds the logits and dO (resized to (n, k))."""
    return extension().softmax_step(W, b, X, y, lr, scratch)


class NativeForm(FusedStepForm):
    """The ``native`` form: a model's whole SGD step as one C++ call (native_step.cpp): the fused ops for a model of
    one dense layer, the stack step (ATen calls, no autograd) for more layers (the MLP)."""
    devices = ("cpu",)
    ops = {"squared": linreg_step, "cross_entropy": softmax_step}
    form_steps = {"squared": "linreg_form_step", "cross_entropy": "softmax_form_step"}

    @classmethod
    def unsupported(cls, spec, setup=None) -> str | None:
        return None  # one dense layer: the fused ops; any other stack: stack_form_step

    def __init__(self, params: dict[str, torch.Tensor], setup):
        self.fused = FusedStepForm.unsupported.__func__(type(self), self.spec) is None
        if not self.fused:
            self.device, self.lr = torch.device(setup.device), torch.tensor(float(setup.lr))
            self.params = [params[name].to(torch.float32, copy=True).contiguous() for name in self.spec.names]
            self._stack = extension().stack_form_step
            return
        super().__init__(params, setup)
        self.weight = self.weight.t().contiguous().t()  # (d, k), column-major: see native_step.cpp
        self.scratch = torch.empty(0)  # O and dO of softmax, kept from step to step
        self._step = getattr(extension(), self.form_steps[self.spec.loss])

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return self._stack(self.params, X, y, self.lr, self.spec.activation == "relu", bool(self.spec.classes))
        return self._step(self.weight, self.b, X, y, self.lr, self.scratch)

    def train_epoch(self, data) -> torch.Tensor:
        """One resident epoch (:class:`impls.contract.EpochData`) in one C++ call (``form_epoch``): rows gathered by
        index and scaled there, then this form's own step on each batch; the steps' losses."""
        kind, params, scratch = ((self.spec.loss, [self.weight, self.b], self.scratch) if self.fused else
                                 ("stack", self.params, None))
        return extension().form_epoch(kind, params, data.X, data.y, data.order, data.batch_size,
                                      float(data.divisor), self.lr, scratch, self.spec.activation == "relu",
                                      bool(self.spec.classes))

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return self.spec.forward(dict(zip(self.spec.names, self.params)), X.to(torch.float32))[1]
        return super().predict(X)

    def state(self) -> dict[str, torch.Tensor]:
        if not self.fused:
            return {name: p.clone() for name, p in zip(self.spec.names, self.params)}
        return {self.weight_name: self.weight.clone(memory_format=torch.contiguous_format),
                self.spec.names[1]: self.b.clone()}

    @classmethod
    def unavailable(cls, device: str) -> str | None:
        return build_problem()


FORM = NativeForm
