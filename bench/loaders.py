"""Loader kinds, each yielding the same (X, y) batches in the same order for a given seed and epoch.

- ``torchvision``: the seeds' pipeline, ``FashionMNIST(transform=ToTensor())`` + ``DataLoader``
  (per-sample PIL -> tensor); for synthetic data the seeds' ``load_array`` (``TensorDataset`` + ``DataLoader``);
- ``tensor``: the whole set as tensors, ``TensorDataset`` + ``DataLoader`` that fetches a whole batch
  per index list (a ``BatchSampler`` as the sampler), so nothing is collated one item at a time;
- ``resident``: the whole set already on the device (uint8 images), shuffled index batches, no DataLoader;
  each epoch is also one :class:`EpochData` (the split, the epoch's order, its batch size), which a form
  with the ``train_epoch`` hook takes whole.
All three draw the epoch's order from one seeded permutation (:class:`EpochPermutation`); the resident
loader makes its orders ahead (:meth:`Resident.prepare`), so a timed epoch does not draw one.
"""
from __future__ import annotations

from collections import deque

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, TensorDataset

from bench.data import fashion_mnist_root, load_split, resize_transform
from impls.contract import EpochData
from impls.models import MODELS, FashionMNIST

LOADERS = ("torchvision", "tensor", "resident")
DATALOADER_KINDS = ("torchvision", "tensor")


class EpochPermutation(Sampler[int]):
    """A new seeded permutation per epoch: ``randperm(n)`` with seed ``seed + epoch``."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The order of ``epoch`` (default: the next one)."""
        epoch = self.epoch if epoch is None else epoch
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self):
        order = self.order()
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self):
        return self.n


class Resident:
    """The whole split on ``device`` as stored (Fashion-MNIST as uint8, a quarter of the float bytes);
    each epoch yields shuffled index batches, pixels scaled to [0, 1] per batch as ``ToTensor`` does."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, device, seed: int = 0):
        self.X, self.y = X.to(device), y.to(device)
        self.batch_size, self.sampler = batch_size, EpochPermutation(len(y), seed)
        self.divisor = 255.0 if X.dtype == torch.uint8 else 1.0
        self.ready: deque[torch.Tensor] = deque()  # the orders of the next epochs, on the device

    def prepare(self, epochs: int) -> None:
        """Make the orders of the next ``epochs`` epochs now (off the timed path), on the device."""
        while len(self.ready) < epochs:
            self.ready.append(self.sampler.order(self.sampler.epoch + len(self.ready)).to(self.X.device))

    def next_epoch(self) -> EpochData:
        """The next epoch whole (its order made now unless :meth:`prepare` made it already)."""
        order = self.ready.popleft() if self.ready else self.sampler.order().to(self.X.device)
        self.sampler.epoch += 1
        return EpochData(self.X, self.y, order, self.batch_size, self.divisor)

    def __iter__(self):
        return self.next_epoch().batches()

    def __len__(self):
        return -(-len(self.y) // self.batch_size)


def make_loader(kind: str, model: str, batch_size: int, workers: int = 0, device="cpu", seed: int = 0,
                persistent_workers: bool = True, pin_memory: bool | None = None, data_dir=None):
    """An iterable of one epoch of ``(X, y)`` batches (re-iterable: each ``iter`` is a new epoch)."""
    split = load_split(model, True, data_dir)
    if kind == "resident":
        return Resident(split.X, split.y, batch_size, device, seed)
    if kind == "torchvision" and isinstance(MODELS[model].data, FashionMNIST):
        import torchvision
        from torchvision import transforms

        size = MODELS[model].data.image_size
        to_tensor = transforms.ToTensor() if size == 28 else transforms.Compose([resize_transform(size),
                                                                                 transforms.ToTensor()])
        dataset = torchvision.datasets.FashionMNIST(str(fashion_mnist_root(data_dir)), train=True,
                                                    transform=to_tensor)
    else:
        dataset = TensorDataset(split.features(), split.y)
    sampler = EpochPermutation(len(split), seed)
    options = dict(num_workers=workers, persistent_workers=persistent_workers and workers > 0,
                   pin_memory=torch.device(device).type == "cuda" if pin_memory is None else pin_memory)
    if kind == "tensor":
        return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                          **options)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **options)


def close_loader(loader) -> None:
    """End a DataLoader's worker processes now (persistent workers otherwise live until the loader is
    collected, and print their own traceback when the run is interrupted)."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    if isinstance(loader, DataLoader):
        loader._iterator = None
