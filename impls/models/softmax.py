"""Softmax regression on Fashion-MNIST (d2l 3.5-3.7, the seeds' second model).

``O = flatten(X) @ W + b`` (784 -> 10), the mean cross-entropy of ``softmax(O)``; lr 0.1, batch 256,
10 epochs (the book's test accuracy is about 0.83). The seeds' pipeline is torchvision's
``FashionMNIST(transform=ToTensor())`` + ``DataLoader`` with 4 workers, ``nn.Linear`` + ``torch.optim.SGD``.
"""
from impls.models import FashionMNIST, ModelSpec

SPEC = ModelSpec(
    name="softmax", summary="softmax regression on Fashion-MNIST (d2l 3.6)", data=FashionMNIST(),
    widths=(784, 10), names=("W", "b"), loss="cross_entropy", lr=0.1, batch_size=256, epochs=10,
    baseline=dict(form="module", device="cpu", loader="torchvision", workers=4), book_accuracy=0.83)
