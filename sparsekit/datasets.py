"""Offline datasets for the examples: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

``apt-get install -y dataset-fashion-mnist`` puts the four IDX files (gzip) under
``/usr/share/datasets/fashion-mnist``; ``SPARSEKIT_FASHION_MNIST`` (or ``root=``) points
elsewhere. Nothing is downloaded. The IDX reader checks the magic number, the element type, the
dimensions and the length, so a truncated or foreign file fails with a ``ValueError``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a numpy array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read an IDX file: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    kind, ndim = data[2], data[3]
    if kind not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{kind:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[kind])
    need = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != need:
        raise ValueError(f"{path}: {len(body)} data bytes for shape {list(shape)} of {dtype} (expected {need})")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


class ImageDataset(NamedTuple):
    x_train: torch.Tensor  # uint8 [N, 28, 28]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_fashion_mnist(root: Optional[str | os.PathLike] = None) -> ImageDataset:
    """Fashion-MNIST: 60 000 training and 10 000 test images (uint8 28 x 28) and labels 0..9."""
    root = Path(root or os.environ.get("SPARSEKIT_FASHION_MNIST") or DEFAULT_ROOT)
    files = {}
    for part, name in (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                       ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")):
        found = [root / (name + ext) for ext in (".gz", "") if (root / (name + ext)).exists()]
        if not found:
            raise FileNotFoundError(f"Fashion-MNIST file {name}[.gz] not found in {root}: install it with "
                                    "`apt-get install -y dataset-fashion-mnist` or set SPARSEKIT_FASHION_MNIST")
        files[part] = read_idx(found[0])
    for split in ("train", "test"):
        x, y = files[f"x_{split}"], files[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"Fashion-MNIST {split} split: images {list(x.shape)} and labels {list(y.shape)} "
                             "do not match")
        if y.size and int(y.max()) > 9:
            raise ValueError(f"Fashion-MNIST {split} split: a label is {int(y.max())} (expected 0..9)")
    return ImageDataset(*(torch.from_numpy(files[k].copy()) if k.startswith("x") else
                          torch.from_numpy(files[k].astype(np.int64)) for k in ImageDataset._fields))
