"""Data: real Fashion-MNIST found, validated and prepared offline; synthetic data made from a seed.

Fashion-MNIST is looked for, in this order: an explicit directory (``--data-dir`` or
``LINBENCH_DATA``), Debian's ``dataset-fashion-mnist`` files, torchvision's own download. The IDX
files are validated (magic numbers, counts, 28x28, labels 0..9, sizes) and put, decompressed, where
``torchvision.datasets.FashionMNIST(root)`` expects them: ``root/FashionMNIST/raw/``.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from bench import UserError
from bench.runs.folder import os_error, write_atomic
from impls.models import MODELS, FashionMNIST, Synthetic

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {  # name -> (magic, count)
    "train-images-idx3-ubyte": (2051, 60000),
    "train-labels-idx1-ubyte": (2049, 60000),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}
HOW_TO_GET = ("get Fashion-MNIST one of three ways: pass --data-dir/LINBENCH_DATA (a folder with the 4 IDX "
              "files, .gz or not), 'apt-get install dataset-fashion-mnist', or a network for torchvision's download")
LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


class DataError(UserError):
    pass


def cache_dir() -> Path:
    """Where prepared data lives: ``LINBENCH_CACHE`` or ``~/.cache/linbench``."""
    root = os.environ.get("LINBENCH_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "linbench")
    return Path(root)


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: unreadable ({e.__class__.__name__}: {e}); {HOW_TO_GET}") from None


def parse_idx(path: Path, raw: bytes, magic: int, count: int) -> np.ndarray:
    """Validate one IDX file's bytes and return its uint8 array, or raise DataError naming the file."""
    def bad(why):
        return DataError(f"{path}: {why}; {HOW_TO_GET}")

    header = 16 if magic == 2051 else 8
    if len(raw) >= 4 and (found := struct.unpack(">I", raw[:4])[0]) != magic:
        raise bad(f"wrong magic number {found} (expected {magic})")
    if len(raw) < header:
        raise bad(f"truncated ({len(raw)} bytes, shorter than the IDX header)")
    n = struct.unpack(">I", raw[4:8])[0]
    if n != count:
        raise bad(f"holds {n} items (expected {count})")
    shape = (n,)
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (28, 28):
            raise bad(f"images are {rows}x{cols} (expected 28x28)")
        shape = (n, 28, 28)
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise bad(f"{'truncated' if len(raw) < expected else 'too long'}: {len(raw)} bytes (expected {expected})")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    if magic == 2049 and data.max(initial=0) > 9:
        raise bad(f"label {int(data.max())} out of range 0..9")
    return data


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz", folder / "FashionMNIST" / "raw" / name,
                      folder / "FashionMNIST" / "raw" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _write_atomic(path: Path, raw: bytes) -> None:
    """Into the prepared-data cache, atomically; a cache that cannot be written is a one-line DataError."""
    hint = " (or set LINBENCH_CACHE to another folder)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(str(os_error(e, path.parent, "write the data cache", hint))) from None
    try:
        write_atomic(path, raw)
    except UserError as e:
        raise DataError(f"{e}{hint}") from None


def prepare_from(folder: Path, root: Path) -> Path:
    """Validate the 4 files in ``folder`` and write them decompressed to ``root/FashionMNIST/raw``."""
    raw_dir = root / "FashionMNIST" / "raw"
    for name, (magic, count) in FILES.items():
        src = _find(folder, name)
        if src is None:
            raise DataError(f"{folder / name}: missing (nor .gz); {HOW_TO_GET}")
        raw = _read(src)
        parse_idx(src, raw, magic, count)
        dst = raw_dir / name
        if src.resolve() != dst.resolve():
            _write_atomic(dst, raw)
    return root


def _validated(root: Path) -> bool:
    raw_dir = root / "FashionMNIST" / "raw"
    for name, (magic, count) in FILES.items():
        path = raw_dir / name
        if not path.is_file():
            return False
        parse_idx(path, _read(path), magic, count)
    return True


def fashion_mnist_root(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The torchvision root holding validated Fashion-MNIST, preparing it on first use."""
    explicit = data_dir or os.environ.get("LINBENCH_DATA")
    if explicit:
        folder = Path(explicit)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such data directory; {HOW_TO_GET}")
        if _validated(folder):
            return folder
        return prepare_from(folder, cache_dir() / "data")
    root = cache_dir() / "data"
    if _validated(root):
        return root
    if DEBIAN_DIR.is_dir():
        return prepare_from(DEBIAN_DIR, root)
    if download:
        try:
            import torchvision

            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        except Exception as e:  # noqa: BLE001 - any download failure means the same to the user
            raise DataError(f"Fashion-MNIST not found and download failed ({e.__class__.__name__}); "
                            f"{HOW_TO_GET}") from None
        if _validated(root):
            return root
    raise DataError(f"Fashion-MNIST not found in {root} or {DEBIAN_DIR}; {HOW_TO_GET}")


def data_problem(models, data_dir=None) -> None:
    """Raise the DataError of the first of ``models`` whose data set is read from files that cannot be had
    (said before anything runs); synthetic data sets are always there."""
    if any(MODELS[m].data.from_files for m in models):
        fashion_mnist_root(data_dir)


def fashion_mnist_available(data_dir=None) -> str | None:
    """None when the real data can be had without a network, else the reason it cannot."""
    try:
        fashion_mnist_root(data_dir, download=False)
    except DataError as e:
        return str(e)
    return None


@dataclass
class Split:
    """A whole split in memory: uint8 images (n, 1, 28, 28) and int64 labels, or synthetic float rows and targets."""
    X: torch.Tensor
    y: torch.Tensor

    def features(self) -> torch.Tensor:
        """Float32 features: pixels scaled to [0, 1] exactly as ``ToTensor`` does."""
        return self.X.to(torch.float32).div_(255) if self.X.dtype == torch.uint8 else self.X

    def __len__(self):
        return len(self.y)


def resize_transform(size: int):
    """The seeds' ``transforms.Resize(size)`` (their ``load_data_fashion_mnist(batch_size, resize)``)."""
    from torchvision import transforms

    return transforms.Resize(size)


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (n, 1, 28, 28) resized as the torchvision loader resizes them: each a PIL image (as
    ``FashionMNIST.__getitem__`` makes it) through ``transforms.Resize``, so ``ToTensor`` of either is the same."""
    from PIL import Image

    resize = resize_transform(size)
    out = np.empty((len(images), 1, size, size), dtype=np.uint8)
    for i, image in enumerate(images[:, 0].numpy()):
        out[i, 0] = np.asarray(resize(Image.fromarray(image, mode="L")))
    return torch.from_numpy(out)


@cache
def load_split(model, train: bool = True, data_dir=None, seed: int = 0) -> Split:
    """The whole training (or test) split of ``model``'s data set (a name or a spec, e.g. at another image
    size) as tensors (cached; do not modify)."""
    data = MODELS[model].data
    if isinstance(data, FashionMNIST) and data.image_size != 28:
        split = load_split(MODELS[model].name, train, data_dir, seed)
        return Split(resized(split.X, data.image_size), split.y)
    if isinstance(data, Synthetic):
        X, y = data.make(seed if train else seed + 1, data.examples if train else data.test_examples)
        return Split(X, y)
    if not isinstance(data, FashionMNIST):
        raise DataError(f"{model}: no loader for its data set {data!r}")
    raw_dir = fashion_mnist_root(data_dir) / "FashionMNIST" / "raw"
    prefix = "train" if train else "t10k"
    images, labels = (raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte")
    X = parse_idx(images, _read(images), *FILES[images.name])
    y = parse_idx(labels, _read(labels), *FILES[labels.name])
    return Split(torch.from_numpy(X.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
