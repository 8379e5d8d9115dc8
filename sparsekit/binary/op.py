"""The binary ops (``xnor_gemm``, ``binary_linear``, ``sign_linear``, ``binary_conv2d``):
schemas, fakes and the Python kernels. The native CPU kernels and their checks are in
``csrc/binary/register.cpp``; :mod:`sparsekit.backend` says how a call reaches a kernel.

``xnor_gemm(a, b, K)``: ``a`` ``[M, W]`` and ``b`` ``[N, W]`` int64 words of packed signs
(see :mod:`.format`) -> int32 ``[M, N]`` dot products of the +-1 vectors.
"""

from __future__ import annotations

import torch

from .._checks import check_shape, check_tensor
from .._conv import conv_output_size
from ..backend import KernelTable
from .format import packed_words
from .reference import binary_conv2d_reference, binary_linear_reference, sign_linear_reference, xnor_gemm_reference

def check_xnor_gemm_args(a, b, K) -> None:
    check_tensor("a", a, dtypes=(torch.int64,), dim=2)
    check_tensor("b", b, dtypes=(torch.int64,), dim=2, device=a.device)
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    W = packed_words(K)
    check_shape("a", a, (a.shape[0], W))
    check_shape("b", b, (b.shape[0], W))


def _xnor_gemm_fake(a, b, K):
    check_xnor_gemm_args(a, b, K)
    return a.new_empty(a.shape[0], b.shape[0], dtype=torch.int32)


xnor_gemm_kernels = KernelTable("xnor_gemm", "(Tensor a, Tensor b, int K) -> Tensor", fake=_xnor_gemm_fake,
                                check=check_xnor_gemm_args)
xnor_gemm_kernels.register("reference", ("any",))(xnor_gemm_reference)
xnor_gemm = xnor_gemm_kernels.op


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


def _binary_linear_fake(x, weight_packed, weight_scale, bias, in_features, input_scale):
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])


# XNOR-Net linear on packed weight signs: binarizes (and packs) x inside
binary_linear_kernels = KernelTable(
    "binary_linear",
    "(Tensor x, Tensor weight_packed, Tensor weight_scale, Tensor? bias, int in_features, bool input_scale) -> Tensor",
    fake=_binary_linear_fake, check=lambda x, w, s, b, k, i: check_binary_linear_args(x, w, s, b, k))
binary_linear_kernels.register("reference", ("any",))(binary_linear_reference)
binary_linear = binary_linear_kernels.op


def _sign_linear_fake(x, weight_packed, weight_scale, bias, in_features):
    check_binary_linear_args(x, weight_packed, weight_scale, bias, in_features)
    return x.new_empty(*x.shape[:-1], weight_packed.shape[0])


# BinaryConnect linear: real x times packed +-1 weight signs, scaled per output
sign_linear_kernels = KernelTable(
    "sign_linear", "(Tensor x, Tensor weight_packed, Tensor weight_scale, Tensor? bias, int in_features) -> Tensor",
    fake=_sign_linear_fake, check=check_binary_linear_args)
sign_linear_kernels.register("reference", ("any",))(sign_linear_reference)
sign_linear = sign_linear_kernels.op


def check_binary_conv2d_args(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                             dilation) -> None:
    check_tensor("x", x, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), dim=4)
    if x.shape[1] != in_channels:
        raise ValueError(f"x must have shape [N, {in_channels}, H, W] (in_channels), got {list(x.shape)}")
    for name, v, lo in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                        ("dilation", dilation, 1)):
        if len(v) != 2 or min(v) < lo:
            raise ValueError(f"{name} must be two ints >= {lo}, got {list(v)}")
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


def _binary_conv2d_fake(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding, dilation):
    check_binary_conv2d_args(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding,
                             dilation)
    OH, OW = conv_output_size(x.shape[2], x.shape[3], kernel_size, stride, padding, dilation)
    return x.new_empty(x.shape[0], weight_packed.shape[0], OH, OW)


# XNOR-Net convolution on packed weight signs (groups = 1); x is binarized inside. The output is
# contiguous NCHW.
binary_conv2d_kernels = KernelTable(
    "binary_conv2d",
    "(Tensor x, Tensor weight_packed, Tensor weight_scale, Tensor? bias, int in_channels, int[2] kernel_size, "
    "int[2] stride, int[2] padding, int[2] dilation) -> Tensor",
    fake=_binary_conv2d_fake, check=check_binary_conv2d_args)
binary_conv2d_kernels.register("reference", ("any",))(binary_conv2d_reference)
binary_conv2d = binary_conv2d_kernels.op
