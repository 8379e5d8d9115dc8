"""CPU kernel for ``sparsekit::bsr_linear``: the native ``_C.bsr_linear`` (fp32).

The native kernel has two paths, picked by M: a memory-bound path for small M and a
register-blocked micro-kernel for large M (see ``csrc/block_sparse_impl.h``). Where
blocks cannot win (a dense-ish weight at large M), the op falls back to a dense
matmul on the densified weight, so converting a layer never makes it slower.
"""

from __future__ import annotations

import torch

from .. import _ext
from .format import bsr_to_dense
from .op import bsr_linear_kernels

# M at or below which the native kernel streams each weight row once (memory bound).
SMALL_M = 24
# Above this M, a weight with a larger block density than DENSE_FALLBACK_DENSITY runs
# dense: densifying costs one pass over N*K floats, less than the block overheads.
DENSE_FALLBACK_MIN_M = 64
DENSE_FALLBACK_DENSITY = 0.75


def _is_fp32(x, values, *rest) -> bool:
    return x.dtype == torch.float32 and values.dtype == torch.float32


def use_dense_fallback(M: int, nnz: int, grid: tuple[int, int]) -> bool:
    nblocks = grid[0] * grid[1]
    return M > DENSE_FALLBACK_MIN_M and nblocks > 0 and nnz / nblocks > DENSE_FALLBACK_DENSITY


@bsr_linear_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def bsr_linear_cpu(x, values, col_indices, row_offsets, bias, out_features: int, in_features: int):
    C = _ext.native()
    if not _is_fp32(x, values):
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}, values {values.dtype}")
    if x.device.type != "cpu":
        raise ValueError(f"the cpu backend needs CPU tensors, got x on {x.device}")
    N, K = out_features, in_features
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K).contiguous()
    M = x2.shape[0]
    nnz, bh, bw = values.shape
    grid = (-(-N // bh), -(-K // bw))
    if use_dense_fallback(M, nnz, grid):
        w = bsr_to_dense(values.detach(), col_indices, row_offsets, (N, K))
        return torch.nn.functional.linear(x, w, bias)
    out = torch.empty(M, N, dtype=torch.float32)
    C.bsr_linear(
        x2.detach().numpy(),
        values.detach().contiguous().numpy(),
        col_indices.contiguous().numpy(),
        row_offsets.contiguous().numpy(),
        None if bias is None else bias.detach().contiguous().numpy(),
        out.numpy(),
        N,
        K,
        SMALL_M,
        torch.get_num_threads(),
    )
    return out.reshape(*lead, N)
