"""The multilayer perceptron on Fashion-MNIST (d2l 4.1-4.3).

``H = relu(flatten(X) @ W1 + b1)`` (784 -> 256), ``O = H @ W2 + b2`` (256 -> 10), the mean cross-entropy of
``softmax(O)``; weights ~ N(0, 0.01), lr 0.1, batch 256, 10 epochs (the book's test accuracy is about 0.85).
The pipeline is softmax regression's: torchvision's ``FashionMNIST`` + ``DataLoader`` with 4 workers, here
``nn.Sequential(Flatten, Linear, ReLU, Linear)`` + ``torch.optim.SGD`` (d2l 4.3's concise code).
"""
from impls.models import FashionMNIST, ModelSpec

SPEC = ModelSpec(
    name="mlp", summary="multilayer perceptron, one hidden layer of 256 ReLUs, on Fashion-MNIST (d2l 4.2)",
    data=FashionMNIST(), widths=(784, 256, 10), names=("W1", "b1", "W2", "b2"), activation="relu",
    loss="cross_entropy", lr=0.1, batch_size=256, epochs=10,
    baseline=dict(form="module", device="cpu", loader="torchvision", workers=4), book_accuracy=0.85,
    gate_samples=1024)  # the loop form takes about 10 ms an example
