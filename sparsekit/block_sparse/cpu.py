"""CPU kernel for ``sparsekit::bsr_linear``: the native ``_C.bsr_linear`` (fp32).

The native kernel has two paths, picked by M: a memory-bound path for small M and a
register-blocked micro-kernel for large M (see ``csrc/block_sparse_impl.h``). Where
blocks cannot win (a dense-ish weight at large M), the op runs a dense matmul on the
densified weight instead, so converting a layer never makes it slower. The densified
weight is cached per weight (validated by identity and version counter, so an in-place
update or a different tensor never hits a stale entry).
"""

from __future__ import annotations

import torch

from .. import _ext
from .._cache import DerivedCache
from .._ext import as_numpy
from .op import bsr_linear_kernels

# M at or below which the native kernel streams each weight row once (memory bound).
SMALL_M = 24
# Above this M, a weight whose block density exceeds dense_crossover() runs dense.
DENSE_FALLBACK_MIN_M = 48
# How many densified weights the fallback keeps (0: densify on every call).
DENSE_CACHE_ENTRIES = 8

_dense_cache = DerivedCache()


def dense_crossover(bh: int, bw: int) -> float:
    """Block density above which the dense matmul is faster at large M. Measured with
    K=N=4096, M=256, 2 threads, AVX-512: 16x16, 32x32, 64x64 and 8x8 blocks break even at
    0.65-0.72 density; 1x32 (one weight row per block: no register reuse) near 0.3."""
    return 0.6 if bh >= 8 and bw >= 8 else 0.25


def use_dense_fallback(M: int, nnz: int, grid: tuple[int, int], block: tuple[int, int]) -> bool:
    nblocks = grid[0] * grid[1]
    return M > DENSE_FALLBACK_MIN_M and nblocks > 0 and nnz / nblocks > dense_crossover(*block)


def _dense_weight(values, col_indices, row_offsets, N: int, K: int) -> torch.Tensor:
    def densify():
        dense = torch.empty(N, K, dtype=torch.float32)
        _ext.native().bsr_to_dense(as_numpy(values), as_numpy(col_indices), as_numpy(row_offsets), dense.numpy(),
                                   torch.get_num_threads())
        return dense

    return _dense_cache.get((values, col_indices, row_offsets), (N, K, tuple(values.shape)), densify,
                            DENSE_CACHE_ENTRIES)


def _is_fp32(x, values, *rest) -> bool:
    return x.dtype == torch.float32 and values.dtype == torch.float32


@bsr_linear_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def bsr_linear_cpu(x, values, col_indices, row_offsets, bias, out_features: int, in_features: int):
    C = _ext.native()
    if not _is_fp32(x, values):
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}, values {values.dtype}")
    if x.device.type != "cpu":
        raise ValueError(f"the cpu backend needs CPU tensors, got x on {x.device}")
    N, K = out_features, in_features
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, K).contiguous()
    M = x2.shape[0]
    nnz, bh, bw = values.shape
    grid = (-(-N // bh), -(-K // bw))
    if use_dense_fallback(M, nnz, grid, (bh, bw)):
        w = _dense_weight(values, col_indices, row_offsets, N, K)
        return torch.nn.functional.linear(x, w, None if bias is None else bias.detach())
    out = torch.empty(M, N, dtype=torch.float32)
    C.bsr_linear(
        as_numpy(x2),
        as_numpy(values),
        as_numpy(col_indices),
        as_numpy(row_offsets),
        None if bias is None else as_numpy(bias),
        out.numpy(),
        N,
        K,
        SMALL_M,
        torch.get_num_threads(),
    )
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], N)

