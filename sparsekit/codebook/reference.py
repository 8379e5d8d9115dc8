"""Plain-PyTorch reference of the codebook matmul, the oracle every kernel is tested against."""

from __future__ import annotations

import math

import torch

from .format import codebook_dense, unpack_indices


def codebook_linear_reference(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    """``x @ W.T + bias`` with ``W[n, k] = codebook[n // group_size, idx[n, k]]`` (dense W)."""
    w = codebook_dense(indices, codebook, bits, in_features, group_size).to(x.dtype)
    y = x @ w.T
    return y + bias if bias is not None else y


def _quantize_q8(v):
    """Symmetric int8 along the last dimension: ``(q, scale)``, scale = max |v| / 127, v / scale
    rounded to nearest even. NaN/Inf rule of the int8 option: a row holding an Inf or a NaN gets
    scale NaN and q = 0, so every output it contributes to is NaN."""
    v = v.float()
    finite = torch.isfinite(v).all(dim=-1)
    amax = v.abs().amax(dim=-1) if v.shape[-1] else v.new_zeros(v.shape[:-1])  # an empty row: scale 0
    scale = torch.where(finite, amax / 127, torch.full_like(amax, float("nan")))
    ok = finite & (scale > 0)
    safe = torch.where(ok, scale, torch.ones_like(scale))
    q = torch.where(ok[..., None], torch.round(v / safe[..., None]), torch.zeros_like(v))
    return q.clamp(-127, 127).to(torch.int8), scale


def quantize_codebook_q8(codebook):
    """The int8 option's centroids: ``(q [G, 16] int8, scale [G])`` with ``codebook ~= q * scale``
    (symmetric per group, see :func:`_quantize_q8`; a group with a non-finite centroid has scale
    NaN); entries past ``2**bits`` repeat ``v & (2**bits - 1)``, so any 4-bit field value selects
    a real centroid."""
    k = codebook.shape[1]
    q, scale = _quantize_q8(codebook.detach())
    return q[:, torch.arange(16, device=codebook.device) % k].contiguous(), scale


def quantize_rows_q8(x):
    """The int8 option's activations: ``(xq int8, scale [rows])``, per row symmetric (see
    :func:`_quantize_q8`; a row with a non-finite value has scale NaN: its outputs are NaN)."""
    return _quantize_q8(x)


def codebook_linear_q8_reference(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    """The int8 option in float64 on the quantized values: ``xscale * cscale * (xq . q[idx]) + bias``."""
    x2 = x.reshape(math.prod(x.shape[:-1]), in_features)  # not -1: in_features may be 0
    xq, xs = quantize_rows_q8(x2)
    q, cs = quantize_codebook_q8(codebook)
    idx = unpack_indices(indices, bits, in_features)
    N = indices.shape[0]
    group = torch.arange(N, device=idx.device) // group_size
    wq = q[group[:, None], idx].double()
    y = (xq.double() @ wq.T) * xs.double()[:, None] * cs.double()[group][None, :]
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype).reshape(*x.shape[:-1], N)


def codebook_q8_error_bound(x, indices, codebook, in_features: int, bits: int, group_size: int):
    """Worst-case |int8 option - exact| per output: each activation is off by at most half its
    row's step and each centroid by half its group's, so
    ``|dy[m, n]| <= cscale_n / 2 * sum_k |x[m, k]| + xscale_m / 2 * sum_k |q_n[idx] * cscale_n|``."""
    x2 = x.reshape(-1, in_features).double()
    _, xs = quantize_rows_q8(x2)
    q, cs = quantize_codebook_q8(codebook)
    idx = unpack_indices(indices, bits, in_features)
    N = indices.shape[0]
    group = torch.arange(N, device=idx.device) // group_size
    wq_abs = (q[group[:, None], idx].double() * cs.double()[group][:, None]).abs().sum(dim=1)
    csn = cs.double()[group]
    return csn[None, :] / 2 * x2.abs().sum(dim=1, keepdim=True) + xs.double()[:, None] / 2 * wq_abs[None, :]
