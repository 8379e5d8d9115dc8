"""Plain-PyTorch reference of the codebook matmul, the oracle every kernel is tested against."""

from __future__ import annotations

from .format import codebook_dense


def codebook_linear_reference(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    """``x @ W.T + bias`` with ``W[n, k] = codebook[n // group_size, idx[n, k]]`` (dense W)."""
    w = codebook_dense(indices, codebook, bits, in_features, group_size).to(x.dtype)
    y = x @ w.T
    return y + bias if bias is not None else y
