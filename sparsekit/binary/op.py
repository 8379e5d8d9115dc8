"""``sparsekit::xnor_gemm`` and ``sparsekit::binary_linear``: schemas, fakes and dispatch.

``xnor_gemm(a, b, K)``: ``a`` ``[M, W]`` and ``b`` ``[N, W]`` int64 words of packed signs
(see :mod:`.format`) -> int32 ``[M, N]`` dot products of the +-1 vectors.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import check_shape, check_tensor
from .._conv import conv_output_size
from ..backend import KernelTable
from .format import packed_words
from .reference import binary_conv2d_reference, binary_linear_reference, sign_linear_reference, xnor_gemm_reference

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


sign_linear_kernels = KernelTable("sparsekit::sign_linear")
sign_linear_kernels.register("reference", ("any",))(sign_linear_reference)


def sign_linear_impl(x, weight_packed, weight_scale, bias, in_features: int):
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return sign_linear_kernels.dispatch(x.device.type, x, weight_packed, weight_scale, bias, in_features)


@torch.library.custom_op("sparsekit::sign_linear", mutates_args=())
def sign_linear(x: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Optional[Tensor],
                in_features: int) -> Tensor:
    """BinaryConnect linear: real x times packed +-1 weight signs, scaled per output."""
    return sign_linear_impl(x, weight_packed, weight_scale, bias, in_features)


@sign_linear.register_fake
def _(x, weight_packed, weight_scale, bias, in_features):
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])


binary_conv2d_kernels = KernelTable("sparsekit::binary_conv2d")
binary_conv2d_kernels.register("reference", ("any",))(binary_conv2d_reference)


def check_binary_conv2d_args(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                             dilation) -> None:
    check_tensor("x", x, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), dim=4)
    if x.shape[1] != in_channels:
        raise ValueError(f"x must have shape [N, {in_channels}, H, W] (in_channels), got {list(x.shape)}")
    for name, v, lo in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                        ("dilation", dilation, 1)):
        if len(v) != 2 or min(v) < lo:
            raise ValueError(f"{name} must be two integers >= {lo}, got {list(v)}")
    C_out = weight_packed.shape[0] if weight_packed.dim() == 2 else -1
    check_tensor("weight_packed", weight_packed, dtypes=(torch.int64,), dim=2, device=x.device)
    check_shape("weight_packed", weight_packed, (C_out, kernel_size[0] * kernel_size[1] * packed_words(in_channels)))
    check_tensor("weight_scale", weight_scale, dtypes=(x.dtype,), dim=1, device=x.device)
    check_shape("weight_scale", weight_scale, (C_out,))
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), dim=1, device=x.device)
        check_shape("bias", bias, (C_out,))
    OH, OW = conv_output_size(x.shape[2], x.shape[3], kernel_size, stride, padding, dilation)
    if OH < 1 or OW < 1:
        raise ValueError(f"input {list(x.shape[2:])} is smaller than the (dilated) kernel {list(kernel_size)}")


def binary_conv2d_impl(x, weight_packed, weight_scale, bias, in_channels: int, kernel_size, stride, padding,
                       dilation):
    check_binary_conv2d_args(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                             dilation)
    return binary_conv2d_kernels.dispatch(x.device.type, x, weight_packed, weight_scale, bias, in_channels,
                                          kernel_size, stride, padding, dilation)


@torch.library.custom_op("sparsekit::binary_conv2d", mutates_args=())
def binary_conv2d(
    x: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Optional[Tensor], in_channels: int,
    kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
) -> Tensor:
    """XNOR-Net convolution on packed weight signs (groups = 1); x is binarized inside. The
    output is contiguous NCHW."""
    return binary_conv2d_impl(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                              dilation)


@binary_conv2d.register_fake
def _(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding, dilation):
    check_binary_conv2d_args(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                             dilation)
    OH, OW = conv_output_size(x.shape[2], x.shape[3], kernel_size, stride, padding, dilation)
    return x.new_empty(x.shape[0], weight_packed.shape[0], OH, OW)
