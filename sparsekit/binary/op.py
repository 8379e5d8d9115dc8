"""``sparsekit::xnor_gemm``: schema, fake and dispatch.

``xnor_gemm(a, b, K)``: ``a`` ``[M, W]`` and ``b`` ``[N, W]`` int64 words of packed signs
(see :mod:`.format`) -> int32 ``[M, N]`` dot products of the +-1 vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_shape, check_tensor
from ..backend import KernelTable
from .format import packed_words
from .reference import xnor_gemm_reference

xnor_gemm_kernels = KernelTable("sparsekit::xnor_gemm")
xnor_gemm_kernels.register("reference", ("any",))(xnor_gemm_reference)


def check_xnor_gemm_args(a, b, K) -> None:
    check_tensor("a", a, dtypes=(torch.int64,), dim=2)
    check_tensor("b", b, dtypes=(torch.int64,), dim=2, device=a.device)
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    W = packed_words(K)
    check_shape("a", a, (a.shape[0], W))
    check_shape("b", b, (b.shape[0], W))


@torch.library.custom_op("sparsekit::xnor_gemm", mutates_args=())
def xnor_gemm(a: Tensor, b: Tensor, K: int) -> Tensor:
    check_xnor_gemm_args(a, b, K)
    return xnor_gemm_kernels.dispatch(a.device.type, a, b, K)


@xnor_gemm.register_fake
def _(a, b, K):
    check_xnor_gemm_args(a, b, K)
    return a.new_empty(a.shape[0], b.shape[0], dtype=torch.int32)
