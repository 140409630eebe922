"""Fashion-MNIST validation and preparation on small IDX files the tests write themselves."""
import gzip
import struct

import numpy as np
import pytest
import torch

from bench import data
from bench.data import DataError, parse_idx


def idx_bytes(magic, n, rows=28, cols=28, fill=0, truncate=0):
    header = struct.pack(">II", magic, n) + (struct.pack(">II", rows, cols) if magic == 2051 else b"")
    body = np.full(n * (rows * cols if magic == 2051 else 1), fill, dtype=np.uint8).tobytes()
    raw = header + body
    return raw[: len(raw) - truncate] if truncate else raw


def write_set(folder, compress=False, **overrides):
    """The four files at full size (zeros, labels cycling 0..9); ``overrides`` replace one file's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (magic, count) in data.FILES.items():
        raw = overrides.get(name) or idx_bytes(magic, count)
        if magic == 2049 and name not in overrides:
            raw = raw[:8] + (np.arange(count) % 10).astype(np.uint8).tobytes()
        path = folder / (name + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    return folder


def test_parse_good_small_file(tmp_path):
    arr = parse_idx(tmp_path / "x", idx_bytes(2051, 3, fill=7), 2051, 3)
    assert arr.shape == (3, 28, 28) and arr.max() == 7


@pytest.mark.parametrize("raw,magic,count,message", [
    (idx_bytes(2051, 3, truncate=5), 2051, 3, "truncated"),
    (idx_bytes(2051, 3)[:10], 2051, 3, "truncated"),
    (idx_bytes(2049, 3), 2051, 3, "wrong magic number 2049"),
    (idx_bytes(2051, 4), 2051, 3, "holds 4 items"),
    (idx_bytes(2051, 3, rows=32), 2051, 3, "32x28"),
    (idx_bytes(2049, 3, fill=10), 2049, 3, "label 10 out of range"),
], ids=["truncated-body", "truncated-header", "wrong-magic", "wrong-count", "wrong-shape", "bad-label"])
def test_parse_rejects_bad_files(tmp_path, raw, magic, count, message):
    with pytest.raises(DataError, match=message) as e:
        parse_idx(tmp_path / "bad-file", raw, magic, count)
    assert "bad-file" in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("compress", [False, True])
def test_prepared_files_work_with_the_seeds_loader(tmp_path, monkeypatch, compress):
    import torchvision
    from torchvision import transforms

    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path / "cache"))
    root = data.fashion_mnist_root(write_set(tmp_path / "given", compress))
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    train = torchvision.datasets.FashionMNIST(root=str(root), train=True, transform=transforms.ToTensor())
    X, y = next(iter(torch.utils.data.DataLoader(train, batch_size=18)))
    assert X.shape == (18, 1, 28, 28) and y.tolist() == [i % 10 for i in range(18)]


@pytest.mark.parametrize("broken,message", [
    ("truncated", "truncated"), ("wrong-magic", "wrong magic"), ("wrong-count", "holds 59999 items"),
    ("missing", "missing"),
])
def test_bad_data_dir_names_the_file(tmp_path, monkeypatch, broken, message):
    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path / "cache"))
    name = "train-images-idx3-ubyte"
    raw = {"truncated": idx_bytes(2051, 60000, truncate=100), "wrong-magic": idx_bytes(2052, 60000),
           "wrong-count": idx_bytes(2051, 59999), "missing": None}[broken]
    folder = write_set(tmp_path / "given", **({name: raw} if raw else {}))
    if broken == "missing":
        (folder / name).unlink()
    with pytest.raises(DataError, match=message) as e:
        data.fashion_mnist_root(folder)
    assert name in str(e.value)


def test_linreg_data_is_deterministic_and_d2l_shaped():
    a, b = data.load_split("linreg"), data.load_split("linreg")
    assert a.X.shape == (1000, 2) and a.y.shape == (1000, 1) and torch.equal(a.X, b.X)
    w, *_ = torch.linalg.lstsq(torch.cat([a.X, torch.ones(1000, 1)], 1).double(), a.y.double()).solution.T
    assert torch.allclose(w, torch.tensor([2.0, -3.4, 4.2], dtype=torch.float64), atol=0.01)


def test_real_data_is_valid(real_data):
    train, test = data.load_split("softmax", True), data.load_split("softmax", False)
    assert train.X.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert torch.bincount(train.y).tolist() == [6000] * 10
