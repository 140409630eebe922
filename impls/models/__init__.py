"""The models, one spec each: what every form, the oracle and every tool knows of a model.

A model is one module here (``linreg.py``, ``softmax.py``, ``mlp.py``) defining ``SPEC``, a :class:`ModelSpec`:
its data set, its parameters (names and shapes, any number), its forward pass and loss, the oracle's
closed-form gradients, its cost for the roofline, its hyperparameters and its baseline cell. ``bench/``
asks the spec and never names a model. A model kept outside the tree is a module named in
``LINBENCH_MODELS`` (comma-separated import paths), each defining ``SPEC`` the same way.

The three models of the seeds are stacks of dense layers (:class:`ModelSpec` is one): linear regression
(d2l 3.2), softmax regression (d2l 3.6) and the multilayer perceptron (d2l 4.2).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache

import torch

BUILT_IN = ("impls.models.linreg", "impls.models.softmax", "impls.models.mlp")


@dataclass(frozen=True)
class FashionMNIST:
    """The real data set of d2l 3.5: 28x28 uint8 images of 10 classes, read from its IDX files (``bench.data``)."""
    name: str = "Fashion-MNIST"
    examples: int = 60000
    test_examples: int = 10000
    features: int = 784
    classes: int = 10
    from_files: bool = True  # real data: it must be found before a run (and the seeds' loader is torchvision's)
    image_size: int = 28  # the side after ``transforms.Resize`` (the seeds' ``resize=``); 28: the images as stored


@dataclass(frozen=True)
class Synthetic:
    """Data made from a seed by ``make(seed, n) -> (X float32 (n, d), y float32 (n, 1))``; the test split is the
    training split's seed + 1."""
    name: str
    make: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]
    examples: int
    test_examples: int
    features: int
    from_files: bool = False


@dataclass(frozen=True)
class Layer:
    """One dense layer ``X @ weight + bias``: its parameters' names and its sizes."""
    weight: str
    bias: str
    inputs: int
    outputs: int


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A stack of dense layers ``widths[0] -> ... -> widths[-1]`` with ``activation`` between them, trained by
    minibatch SGD on the batch mean of ``loss``: ``"squared"`` (``(y_hat - y)**2 / 2``, float targets) or
    ``"cross_entropy"`` (of softmax(logits), int64 class labels).

    ``names``: the parameters' names, weight and bias per layer (``w``, ``b``; ``W1``, ``b1``, ``W2``, ``b2``);
    weights are (in, out) as the book's scratch code keeps them. ``baseline``: the seeds' pipeline for the
    model (form, device, loader, workers; its batch size is ``batch_size``), the cell every speedup is against.
    ``book_accuracy``: the test accuracy the book reports after ``epochs`` epochs (classifiers).
    """
    name: str
    summary: str
    data: FashionMNIST | Synthetic
    widths: tuple[int, ...]
    names: tuple[str, ...]
    loss: str
    lr: float
    batch_size: int
    epochs: int
    baseline: dict
    activation: str | None = None
    book_accuracy: float | None = None
    init_std: float = 0.01
    gate_samples: int = 12800  # the gate's full batches cover this many samples (fewer for costly models)
    batch_sizes: tuple[int, ...] = field(default=())  # the gate's default batch sizes (empty: batch_size only)

    def __post_init__(self):
        if self.loss not in ("squared", "cross_entropy"):
            raise ValueError(f"{self.name}: loss must be 'squared' or 'cross_entropy', got {self.loss!r}")
        if len(self.names) != 2 * (len(self.widths) - 1):
            raise ValueError(f"{self.name}: {len(self.widths) - 1} layers need {2 * (len(self.widths) - 1)} names")
        if self.activation not in (None, "relu"):
            raise ValueError(f"{self.name}: activation must be None or 'relu', got {self.activation!r}")

    @property
    def layers(self) -> list[Layer]:
        return [Layer(self.names[2 * i], self.names[2 * i + 1], a, b)
                for i, (a, b) in enumerate(zip(self.widths, self.widths[1:]))]

    @property
    def classes(self) -> int | None:
        """The number of classes of a classifier (its outputs are logits), else None."""
        return self.widths[-1] if self.loss == "cross_entropy" else None

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.int64 if self.classes else torch.float32

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for layer in self.layers
                for name, shape in ((layer.weight, (layer.inputs, layer.outputs)), (layer.bias, (layer.outputs,)))}

    def init(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """d2l's init as CPU fp64 tensors: weights ~ N(0, init_std), biases 0, drawn layer by layer from one seed."""
        g = torch.Generator().manual_seed(seed)
        params = {}
        for layer in self.layers:
            params[layer.weight] = torch.normal(0.0, self.init_std, size=(layer.inputs, layer.outputs), generator=g,
                                                dtype=torch.float64)
            params[layer.bias] = torch.zeros(layer.outputs, dtype=torch.float64)
        return params

    def act(self, H: torch.Tensor) -> torch.Tensor:
        return torch.relu(H) if self.activation == "relu" else H

    def forward(self, params: dict[str, torch.Tensor], X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(each layer's input, the outputs) for rows ``X`` (n, d), in the parameters' dtype."""
        inputs, H = [], X.reshape(X.shape[0], -1).to(params[self.names[0]].dtype)
        for i, layer in enumerate(self.layers):
            if i:
                H = self.act(H)
            inputs.append(H)
            H = H @ params[layer.weight] + params[layer.bias]
        return inputs, H

    def batch_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective, fp64-safe: mean ``squared_loss`` or mean stable cross-entropy ``logsumexp(o) - o[y]``."""
        if self.loss == "squared":
            return ((out - y.reshape(out.shape).to(out.dtype)) ** 2 / 2).mean()
        return (torch.logsumexp(out, dim=1) - out.gather(1, y.reshape(-1, 1)).squeeze(1)).mean()

    def output_grad(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(batch-mean loss)/d(out), in closed form: ``(out - y) / n`` or ``(softmax(out) - onehot(y)) / n``
        (a max-shifted softmax)."""
        if self.loss == "squared":
            d_out = out - y.reshape(out.shape).to(out.dtype)
        else:
            d_out = torch.softmax(out, dim=1)
            d_out[torch.arange(len(y)), y] -= 1.0
        return d_out / out.shape[0]

    def grads(self, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor):
        """(loss, {name: gradient}, outputs) of the batch mean, by hand-written backpropagation (no autograd)."""
        inputs, out = self.forward(params, X)
        loss = self.batch_loss(out, y)
        grads, d = {}, self.output_grad(out, y)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            grads[layer.weight], grads[layer.bias] = inputs[i].T @ d, d.sum(0)
            if i:
                d = d @ params[layer.weight].T
                if self.activation == "relu":
                    d = d * (inputs[i] > 0)
        return loss, grads, out

    def cost(self, n: int, element_bytes: int = 4) -> tuple[float, float]:
        """(FLOPs, bytes) of one training step on ``n`` examples: the minimum a roofline counts.

        FLOPs: per layer the forward GEMM and the weight-gradient GEMM, plus the input-gradient GEMM of every
        layer but the first, 2 per multiply-add (biases, activations, softmax and loss are lower order).
        Bytes: the batch read once, ``element_bytes`` an element (X, and y where it is a float target): 4 in
        float32, 2 in bfloat16."""
        gemms = sum((2 if i == 0 else 3) * layer.inputs * layer.outputs for i, layer in enumerate(self.layers))
        return float(2 * n * gemms), float(element_bytes * n * (self.widths[0] + (0 if self.classes else 1)))

    def at(self, image_size: int) -> ModelSpec:
        """This model on its images resized to ``image_size`` x ``image_size`` (``transforms.Resize``, as the
        seeds' ``load_data_fashion_mnist(batch_size, resize)``): the first layer as wide as the pixels, and the
        learning rate scaled by 784 / pixels, so that a step moves the outputs as far as at 28x28 (a step moves
        them by about lr |x|^2, which grows with the pixels: at 64x64 and lr 0.1 softmax regression diverges)."""
        if image_size == getattr(self.data, "image_size", 28):
            return self
        if not isinstance(self.data, FashionMNIST) or image_size < 1:
            raise ModelError(f"{self.name}'s data ({self.data.name}) are not images: --image-sizes applies to "
                             "image data sets only" if not isinstance(self.data, FashionMNIST) else
                             f"image size must be >= 1, got {image_size}")
        return _resized(self, image_size)

    def large_logit_params(self, params: dict[str, torch.Tensor], X: torch.Tensor, seed: int = 0):
        """Parameters whose logits on rows ``X`` are around +-1000, and all equal near +1000 and near -1000 (the
        last layer changed): where a softmax without the max-subtraction overflows. {} for a regression."""
        if not self.classes:
            return {}
        last = self.layers[-1]
        inputs, _ = self.forward(params, X)
        scale = 1000.0 / float(inputs[-1].norm(dim=1).mean())  # weights of this std give logits of std ~1000
        g = torch.Generator().manual_seed(seed + 1)
        weight = torch.randn(params[last.weight].shape, generator=g, dtype=torch.float64) * scale
        spread = {**params, last.weight: weight}
        zero = {**params, last.weight: torch.zeros_like(params[last.weight])}
        return {"logits +-1000": spread,
                "all logits +1000": {**zero, last.bias: torch.full_like(params[last.bias], 1000.0)},
                "all logits -1000": {**zero, last.bias: torch.full_like(params[last.bias], -1000.0)}}


class ModelError(ValueError):
    """A model module that cannot be loaded or defines no valid SPEC, or a setting a model cannot take."""


@cache
def _resized(spec: ModelSpec, size: int) -> ModelSpec:
    data = replace(spec.data, image_size=size, features=size * size)
    lr = spec.lr * spec.widths[0] / (size * size)
    return replace(spec, data=data, widths=(size * size, *spec.widths[1:]), lr=lr)


def _load(path: str) -> ModelSpec:
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise ModelError(f"cannot import model module {path!r} ({e}); check LINBENCH_MODELS") from None
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModelSpec):
        raise ModelError(f"model module {path!r} defines no SPEC (an impls.models.ModelSpec)")
    return spec


@cache
def _models(extra: str) -> dict[str, ModelSpec]:
    specs = [_load(p) for p in (*BUILT_IN, *(p.strip() for p in extra.split(",") if p.strip()))]
    return {spec.name: spec for spec in specs}


class _Models(Mapping):
    """Every model by name: the built-in ones, then those of ``LINBENCH_MODELS``, in that order (read on use,
    so a model added to the variable is seen without a restart)."""

    def _specs(self) -> dict[str, ModelSpec]:
        return _models(os.environ.get("LINBENCH_MODELS", ""))

    def __getitem__(self, name: str | ModelSpec) -> ModelSpec:
        """The spec named ``name``; a spec given in its place is itself (a cell's spec, e.g. at another image
        size, goes wherever a model's name does)."""
        return name if isinstance(name, ModelSpec) else self._specs()[name]

    def __iter__(self):
        return iter(self._specs())

    def __len__(self) -> int:
        return len(self._specs())


MODELS = _Models()


def init_params(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The seeded init of ``model`` (:meth:`ModelSpec.init`)."""
    return MODELS[model].init(seed)


def step_cost(model: str, n: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one training step of ``model`` on ``n`` examples (:meth:`ModelSpec.cost`)."""
    return MODELS[model].cost(n)


def train_examples(model: str) -> int:
    """The size of ``model``'s training split."""
    return MODELS[model].data.examples


def baselines() -> dict[str, dict]:
    """The seeds' pipeline per model, as a cell's axes: every row's speedup is against its model's baseline."""
    return {name: dict(model=name, **spec.baseline, batch_size=spec.batch_size) for name, spec in MODELS.items()}
