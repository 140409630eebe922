"""Linear regression on synthetic data (d2l 3.1-3.3, the seeds' first model).

``y = X w_true + b_true + noise``, 1000 examples of 2 features; ``y_hat = X @ w + b`` with
``squared_loss = (y_hat - y)**2 / 2``; lr 0.03, batch 10, 3 epochs. The seeds' pipeline is ``load_array``
(``TensorDataset`` + ``DataLoader``) with ``nn.Linear`` + ``torch.optim.SGD``.
"""
from __future__ import annotations

import torch

from impls.models import ModelSpec, Synthetic

TRUE_W = (2.0, -3.4)
TRUE_B = 4.2
NOISE = 0.01
EXAMPLES = 1000


def synthetic_data(seed: int = 0, n: int = EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """d2l's ``synthetic_data(true_w, true_b, 1000)``, deterministic from ``seed`` (float32)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.normal(0.0, 1.0, size=(n, len(TRUE_W)), generator=g)
    y = X @ torch.tensor(TRUE_W).reshape(-1, 1) + TRUE_B
    y += torch.normal(0.0, NOISE, size=y.shape, generator=g)
    return X, y


SPEC = ModelSpec(
    name="linreg", summary="linear regression on synthetic data (d2l 3.2)",
    data=Synthetic("synthetic y = 2 x1 - 3.4 x2 + 4.2 + noise", synthetic_data, EXAMPLES, EXAMPLES, len(TRUE_W)),
    widths=(len(TRUE_W), 1), names=("w", "b"), loss="squared", lr=0.03, batch_size=10, epochs=3,
    baseline=dict(form="module", device="cpu", loader="torchvision", workers=0))
