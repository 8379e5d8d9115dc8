"""The IDX reader and the Fashion-MNIST loader: real files where the Debian package is installed
(CI installs it), synthetic ones for every failure mode."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsekit.datasets import DEFAULT_ROOT, load_fashion_mnist, read_idx


def _idx(array: np.ndarray, kind: int = 0x08) -> bytes:
    return bytes([0, 0, kind, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_split(root: Path, n_train=5, n_test=3, gz=True):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, arr in files.items():
        data = _idx(arr)
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_synthetic_files_round_trip(tmp_path, gz):
    files = _write_split(tmp_path, gz=gz)
    d = load_fashion_mnist(tmp_path)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert torch.equal(d.x_train, torch.from_numpy(files["train-images-idx3-ubyte"]))
    assert torch.equal(d.y_test, torch.from_numpy(files["t10k-labels-idx1-ubyte"].astype(np.int64)))


def test_idx_element_types_and_byte_order(tmp_path):
    a = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(_idx(a, 0x0C))
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.int32 and out.tolist() == a.tolist()
    f = np.linspace(-1, 1, 5).astype(">f4")
    (tmp_path / "f.idx").write_bytes(_idx(f, 0x0D))
    assert np.allclose(read_idx(tmp_path / "f.idx"), np.linspace(-1, 1, 5))


def test_bad_files_fail_loudly(tmp_path):
    good = _idx(np.zeros((2, 3), dtype=np.uint8))
    cases = {"magic": (b"\x01" + good[1:], "bad magic"), "type": (good[:2] + b"\x07" + good[3:], "element type"),
             "header": (good[:6], "truncated IDX header"), "body": (good[:-1], "data bytes for shape \\[2, 3\\]"),
             "long": (good + b"\x00", "data bytes")}
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=msg):
            read_idx(tmp_path / name)
    (tmp_path / "t.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(tmp_path / "t.gz")


def test_missing_mismatched_and_out_of_range(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    _write_split(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(4, dtype=np.uint8))))
    with pytest.raises(ValueError, match="train split: images \\[5, 28, 28\\] and labels \\[4\\]"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.full(5, 12, dtype=np.uint8))))
    with pytest.raises(ValueError, match="a label is 12"):
        load_fashion_mnist(tmp_path)
    monkeypatch.setenv("SPARSEKIT_FASHION_MNIST", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_fashion_mnist()


@pytest.mark.skipif(not Path(DEFAULT_ROOT).exists(), reason="apt-get install -y dataset-fashion-mnist (CI does)")
def test_the_real_dataset():
    d = load_fashion_mnist()
    assert d.x_train.shape == (60000, 28, 28) and d.x_test.shape == (10000, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10 and torch.bincount(d.y_test).tolist() == [1000] * 10
    assert 0.27 < float(d.x_train.float().mean()) / 255 < 0.30  # the known mean, 0.286
