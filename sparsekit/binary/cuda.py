"""CUDA kernels for the binary ops: ``xnor.cu`` through NVRTC (see :mod:`sparsekit._nvrtc`).

``binary_linear`` and ``binary_conv2d`` on CUDA pack x with the PyTorch packing (and the
word im2col), run the XNOR kernel and apply the scales and bias with PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch

from .._nvrtc import as_cupy, launch
from ..backend import cupy_available
from .format import im2col_words, pack_signs, packed_words, pad_conv_rows
from .op import binary_conv2d_kernels, binary_linear_kernels, xnor_gemm_kernels

TILE = 16


@xnor_gemm_kernels.register("cuda", ("cuda",), available=cupy_available)
def xnor_gemm_cuda(a, b, K: int, last_bits: int = 0):
    if a.device.type != "cuda":
        raise ValueError(f"the cuda backend needs CUDA tensors, got a on {a.device}")
    a, b = a.contiguous(), b.contiguous()
    M, N, W = a.shape[0], b.shape[0], a.shape[1]
    out = torch.empty(M, N, dtype=torch.int32, device=a.device)
    if M and N:
        grid = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE, 1)
        last_bits = last_bits or (K % 64 or 64)
        args = (as_cupy(a), as_cupy(b), as_cupy(out), np.int64(M), np.int64(N), np.int64(W), np.int64(K),
                np.int64(last_bits))
        launch("xnor.cu", "xnor_gemm_kernel", grid, (TILE, TILE, 1), args, a.device)
    return out


@binary_linear_kernels.register("cuda", ("cuda",), available=cupy_available)
def binary_linear_cuda(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    x2 = x.reshape(-1, in_features)
    dots = xnor_gemm_cuda(pack_signs(x2), weight_packed, in_features)
    y = dots.to(x.dtype) * weight_scale
    if input_scale:
        y = y * x2.abs().mean(dim=-1, keepdim=True)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_packed.shape[0])


@binary_conv2d_kernels.register("cuda", ("cuda",), available=cupy_available)
def binary_conv2d_cuda(x, weight_packed, weight_scale, bias, in_channels: int, kernel_size, stride, padding,
                       dilation):
    N, Cin, H, W = x.shape
    xw = pack_signs(x.permute(0, 2, 3, 1)).reshape(N, H, W, packed_words(Cin))
    cols, (OH, OW) = im2col_words(xw, Cin, kernel_size, stride, padding, dilation)
    w = pad_conv_rows(weight_packed, Cin, *kernel_size)
    dots = xnor_gemm_cuda(cols, w, kernel_size[0] * kernel_size[1] * Cin, 64)  # padding bits all zero
    y = dots.to(x.dtype) * weight_scale
    if bias is not None:
        y = y + bias
    return y.view(N, OH, OW, -1).permute(0, 3, 1, 2).contiguous()
