"""CPU kernel for ``sparsekit::bsr_linear``: the native ``_C.bsr_linear`` (fp32).

The native kernel has two paths, picked by M: a memory-bound path for small M and a
register-blocked micro-kernel for large M (see ``csrc/block_sparse_impl.h``). It reads the
layer's own tensors and derives nothing from them, so nothing is cached between calls: a
weight written in place, through ``.data`` or replaced is read as it is on the next call, from
any thread and under ``inference_mode``. NaN/Inf follow ``x @ W.T`` with the dense weight (an
absent block is zeros, so a non-finite input meets them: see ``bsr_propagate_nonfinite`` in
``csrc/bsr_nonfinite.h``).

Blocks lose to a dense matmul at large M once the block density is high (measured on a Sapphire
Rapids Xeon, K = N = 4096, M = 256, 2 threads: break-even at 0.65-0.72 for 8x8 to 64x64 blocks,
near 0.3 for 1x32); prune further than that, or keep such a layer an ``nn.Linear``.
"""

from __future__ import annotations

import torch

from .. import _ext
from .._ext import as_numpy
from .op import bsr_linear_kernels

# M at or below which the native kernel streams each weight row once (memory bound).
SMALL_M = 24


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
    out = torch.empty(x2.shape[0], N, dtype=torch.float32)
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
