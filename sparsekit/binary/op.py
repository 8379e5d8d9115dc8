"""``sparsekit::xnor_gemm`` and ``sparsekit::binary_linear``: schemas, fakes and dispatch.

``xnor_gemm(a, b, K)``: ``a`` ``[M, W]`` and ``b`` ``[N, W]`` int64 words of packed signs
(see :mod:`.format`) -> int32 ``[M, N]`` dot products of the +-1 vectors.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import check_shape, check_tensor
from ..backend import KernelTable
from .format import packed_words
from .reference import binary_linear_reference, xnor_gemm_reference

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


binary_linear_kernels = KernelTable("sparsekit::binary_linear")
binary_linear_kernels.register("reference", ("any",))(binary_linear_reference)


def check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features) -> None:
    check_tensor("x", x, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64))
    check_tensor("weight_packed", weight_packed, dtypes=(torch.int64,), dim=2, device=x.device)
    N = weight_packed.shape[0]
    check_shape("weight_packed", weight_packed, (N, packed_words(in_features)))
    check_tensor("weight_scale", weight_scale, dtypes=(x.dtype,), dim=1, device=x.device)
    check_shape("weight_scale", weight_scale, (N,))
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape [..., {in_features}] (in_features), got {list(x.shape)}")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), dim=1, device=x.device)
        check_shape("bias", bias, (N,))


def binary_linear_impl(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    """What the op runs: argument checks, then the kernel the backend switch picks."""
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return binary_linear_kernels.dispatch(
        x.device.type, x, weight_packed, weight_scale, bias, in_features, input_scale
    )


@torch.library.custom_op("sparsekit::binary_linear", mutates_args=())
def binary_linear(
    x: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Optional[Tensor], in_features: int, input_scale: bool
) -> Tensor:
    """XNOR-Net linear on packed weight signs: binarizes (and packs) x inside."""
    return binary_linear_impl(x, weight_packed, weight_scale, bias, in_features, input_scale)


@binary_linear.register_fake
def _(x, weight_packed, weight_scale, bias, in_features, input_scale):
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])
