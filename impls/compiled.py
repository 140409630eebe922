"""The ``compiled`` form: ``torch.compile`` of the whole training step (forward, loss, backward, update).

The step is functional: ``torch.func.grad_and_value`` of the scratch objective, then the SGD update,
all in one graph (``fullgraph=True``). The learning rate is a 0-dim tensor and the batch dimension is
marked dynamic, so a new lr or another batch size does not recompile. By design there are at most two
graphs per (model, device, thread count): torch.compile specialises a dimension of size 1, so a batch
of one example (a ragged last batch, or ``--batch-sizes 1``) gets a graph of its own, and every other
size shares the dynamic one, in whatever order the sizes come. Each compilation is counted with the
batch size that caused it and its seconds; a third one raises. Each compiled graph counts its runs, so a
step that ran none (dynamo running it eagerly: ``torch.compiler.set_stance("force_eager")``, a disabled
dynamo, a fallback) is counted too (``eager_steps``) and the harness flags the cell instead of timing eager
code as ``compiled``.

What was tried, and kept (softmax, CPU, 2 threads, step time against eager ``module``; one process,
interleaved, on a loaded 2-core machine, so rough): the weight kept in ``nn.Linear``'s (k, d) layout and
the logits taken with ``F.linear`` made the step 0.56x / 0.25x / 0.90x of ``module``'s at batch 256 /
1024 / 4096, against 2.8x / 1.1x / 1.6x with the book's (d, k) layout: the weight gradient is then
``dO^T X``, the layout the BLAS's small-N GEMM is fast at (as autograd does for ``nn.Linear``), instead
of ``X^T dO``. Static shapes (one graph per batch size) and a hand-written softmax backward inside the
graph were within the noise of the dynamic graph with autograd's backward at batch 1024 and 4096 (at 256
the load's noise was too large to tell), so neither is kept; ``max-autotune`` modes and ``cpp_wrapper``
are not measured yet (``freezing`` is for inference only). The update is in place
inside the graph (``sub_``), so the parameters keep their storage and strides from step to step (a new,
differently strided weight would fail a guard and recompile).
"""
from __future__ import annotations

import time

import torch

from impls import precision
from impls.common import FP32, flat

MAX_COMPILES = 2  # the dynamic batch graph and the batch-of-one graph
RECOMPILE_LIMIT = 64  # dynamo's recompile limit while a CompiledStep is made (see CompiledStep.__init__)


class RecompileError(RuntimeError):
    """A compiled step asked to compile more graphs than it allows."""


class CompiledStep:
    """A compiled training step that logs its compilations and fails loudly past ``max_compiles``."""

    def __init__(self, spec, max_compiles: int = MAX_COMPILES):
        self.spec, self.max_compiles = spec, max_compiles
        self.log: list[dict] = []  # one {"batch_size", "seconds"} per compilation
        self.graph_runs = 0  # calls of a compiled graph
        self.eager_calls = 0  # calls that ran no compiled graph: dynamo ran the step eagerly
        self._batch_size = 0
        # Every CompiledStep (one per model, device and thread count, plus any a test makes) caches its graphs on
        # the same code object; dynamo's default of 8 per code object would make later ones run eagerly. Set
        # here, not on import: importing dynamo takes over a second, which `linbench --help` need not pay.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self._fn = torch.compile(self._step, backend=self._backend, fullgraph=True)

    @property
    def compiles(self) -> int:
        return len(self.log)

    @property
    def compile_seconds(self) -> float:
        return sum(e["seconds"] for e in self.log)

    def _backend(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        if self.compiles >= self.max_compiles:
            seen = ", ".join(str(e["batch_size"]) for e in self.log)
            raise RecompileError(f"compiled {self.spec.name} step recompiled (compile #{self.compiles + 1}, batch "
                               f"{self._batch_size}; earlier graphs for batches {seen}): a guard failed (input "
                               "dtype, device or rank, or a global setting changed)")
        self.log.append({"batch_size": self._batch_size, "seconds": 0.0})
        graph = compile_fx(gm, example_inputs)

        def counted(*args):
            self.graph_runs += 1
            return graph(*args)

        return counted

    def _step(self, params, lr, X, y):
        def objective(params):  # weights (k, d), nn.Linear's layout: see the module docstring
            H = X
            for i in range(0, len(params), 2):
                if i and self.spec.activation == "relu":
                    H = torch.relu(H)
                H = torch.nn.functional.linear(H, params[i], params[i + 1])
            return self.spec.batch_loss(H, y)

        grads, loss = torch.func.grad_and_value(objective)(params)
        for param, grad in zip(params, grads):
            param.sub_(lr * grad)  # in place: the parameters keep their storage and strides, step to step
        return loss

    def __call__(self, params, lr, X, y):
        torch._dynamo.maybe_mark_dynamic(X, 0)
        torch._dynamo.maybe_mark_dynamic(y, 0)
        before, runs, start = self.compiles, self.graph_runs, time.perf_counter()
        self._batch_size = X.shape[0]
        try:
            out = self._fn(params, lr, X, y)
        except torch._dynamo.exc.BackendCompilerFailed as e:  # say why, not where dynamo caught it
            if isinstance(getattr(e, "inner_exception", None), RecompileError):
                raise e.inner_exception from None
            raise
        self.eager_calls += self.graph_runs == runs
        if self.compiles != before:  # the first call of a new graph: tracing, compiling and the run
            self.log[-1]["seconds"] = time.perf_counter() - start
        return out


_STEPS: dict[tuple, CompiledStep] = {}


class CompiledForm:
    devices = ("cpu", "cuda")
    tolerance = FP32

    precisions = ("fp32", "tf32", "bf16", "amp_bf16")
    precision_note = "amp_fp16 needs a gradient scaler outside the compiled step: the module form has it"

    def __init__(self, params: dict[str, torch.Tensor], setup):
        self.device, self.setup = torch.device(setup.device), setup
        self.dtype = dtype = precision.of(setup).storage
        self.params = tuple(params[name].to(self.device, dtype).t().contiguous() if name == layer.weight
                            else params[name].to(self.device, dtype).clone()
                            for layer in self.spec.layers for name in (layer.weight, layer.bias))  # weights (k, d)
        self.lr = torch.tensor(float(setup.lr), device=self.device)
        # a graph per precision, and inductor's CPU code is per thread count
        key = (self.spec, self.device.type, torch.get_num_threads(), setup.precision)
        if key not in _STEPS:
            _STEPS[key] = CompiledStep(self.spec)
        self.compiled = _STEPS[key]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        H = flat(X).to(self.device, self.dtype)
        with torch.no_grad(), precision.computing(self.setup):
            for i in range(0, len(self.params), 2):
                if i and self.spec.activation == "relu":
                    H = torch.relu(H)
                H = torch.nn.functional.linear(H, self.params[i], self.params[i + 1])
        return H

    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        X, y = flat(X).to(self.device, self.dtype), y.to(self.device)
        if not self.spec.classes:
            y = y.reshape(-1, 1).to(self.dtype)
        with precision.computing(self.setup):
            return self.compiled(self.params, self.lr, X, y)

    def compile_log(self) -> list[dict]:
        """Every compilation of the shared step so far: ``{"batch_size", "seconds"}`` each."""
        return list(self.compiled.log)

    def eager_steps(self) -> int:
        """Steps of the shared step so far that ran no compiled graph (dynamo ran them eagerly)."""
        return self.compiled.eager_calls

    def state(self) -> dict[str, torch.Tensor]:
        return {name: (p.t() if i % 2 == 0 else p).cpu().clone(memory_format=torch.contiguous_format)
                for i, (name, p) in enumerate(zip(self.spec.names, self.params))}


FORM = CompiledForm
