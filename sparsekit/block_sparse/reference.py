"""Plain-PyTorch references for the block-sparse ops: the oracle every kernel is tested against."""

from __future__ import annotations

import torch

from .format import block_rows, bsr_to_dense, grid_shape


def bsr_linear_reference(x, values, col_indices, row_offsets, bias, out_features: int, in_features: int):
    """``x @ W.T + bias`` with ``W`` densified from its blocks."""
    w = bsr_to_dense(values, col_indices, row_offsets, (out_features, in_features)).to(x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


def propagate_nonfinite(x2, y, col_indices, row_offsets, block_size) -> torch.Tensor:
    """For kernels that multiply stored blocks only: ``y [M, N]`` with NaN where ``x2 @ W.T`` has
    one because a non-finite ``x2[m, k]`` meets an absent block (zeros: 0 * Inf = 0 * NaN = NaN),
    i.e. at every output of a block row that stores no block at k's block column. The same rule
    as ``bsr_propagate_nonfinite`` of the CPU kernel (``csrc/bsr_nonfinite.h``)."""
    bad = ~torch.isfinite(x2)
    if not bool(bad.any()):
        return y
    (M, K), N = x2.shape, y.shape[1]
    bh, bw = block_size
    Nb, Kb = grid_shape((N, K), (bh, bw))
    bad_cols = torch.nn.functional.pad(bad, (0, Kb * bw - K)).reshape(M, Kb, bw).any(dim=2)  # [M, Kb]
    absent = torch.ones(Nb, Kb, dtype=torch.float32, device=y.device)
    absent[block_rows(row_offsets, col_indices.shape[0]), col_indices.long()] = 0
    hit = (bad_cols.float() @ absent.T) > 0  # [M, Nb]: a bad column this block row lacks
    return y.masked_fill(hit.repeat_interleave(bh, dim=1)[:, :N], float("nan"))


def bsr_sddmm_reference(grad_out, x, col_indices, row_offsets, bh: int, bw: int, chunk_bytes: int = 1 << 26):
    """Gradient of the stored blocks: ``grad_out[:, rows]^T @ x[:, cols]`` for every stored block only
    (a sampled dense-dense product). ``grad_out`` is ``[M, N]``, ``x`` is ``[M, K]``; returns ``[nnz, bh, bw]``."""
    M, N = grad_out.shape
    K = x.shape[1]
    if M == 0:
        return grad_out.new_zeros(col_indices.shape[0], bh, bw)
    Nb, Kb = grid_shape((N, K), (bh, bw))
    nnz = col_indices.shape[0]
    g = torch.nn.functional.pad(grad_out, (0, Nb * bh - N)).reshape(M, Nb, bh)
    xx = torch.nn.functional.pad(x, (0, Kb * bw - K)).reshape(M, Kb, bw)
    rows = block_rows(row_offsets, nnz)
    cols = col_indices.long()
    out = grad_out.new_empty(nnz, bh, bw)
    step = max(1, chunk_bytes // max(1, M * (bh + bw) * grad_out.element_size()))
    for s in range(0, nnz, step):
        gr = g[:, rows[s : s + step]].permute(1, 2, 0)  # [b, bh, M]
        xc = xx[:, cols[s : s + step]].permute(1, 0, 2)  # [b, M, bw]
        torch.bmm(gr, xc, out=out[s : s + step])
    return out


def bsr_transpose_reference(values, col_indices, row_offsets, out_features: int, in_features: int):
    """BSR form of ``W.T`` (blocks transposed, indexed by block column of ``W``)."""
    nnz, bh, bw = values.shape
    Nb, Kb = grid_shape((out_features, in_features), (bh, bw))
    rows = block_rows(row_offsets, nnz)
    cols = col_indices.long()
    order = torch.argsort(cols * Nb + rows, stable=True)
    values_t = values[order].transpose(1, 2).contiguous()
    cols_t = rows[order].to(torch.int32)
    counts = torch.zeros(Kb, dtype=torch.int64, device=values.device).index_add_(
        0, cols, torch.ones_like(cols)
    )
    row_offsets_t = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
    return values_t, cols_t, row_offsets_t
