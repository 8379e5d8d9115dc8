"""CUDA kernels for the binary ops: ``xnor.cu`` (popcount) and ``xnor_b1.cu`` (1-bit tensor
cores) through NVRTC (see :mod:`sparsekit._nvrtc`), the faster of the two measured per device.

``binary_linear`` and ``binary_conv2d`` on CUDA pack x with the PyTorch packing (and the
word im2col), run the XNOR kernel and apply the scales and bias with PyTorch.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np
import torch

from .._nvrtc import as_cupy, launch
from ..backend import cupy_available
from .format import clear_padding_bits, im2col_words, pack_signs, packed_words, pad_conv_rows
from .op import binary_conv2d_kernels, binary_linear_kernels, xnor_gemm_kernels
from .reference import input_scale_of

TILE = 16  # xnor.cu: 16 x 16 threads per 16 x 16 output tile
B1_TILE, B1_THREADS = 16, 128  # xnor_b1.cu: 4 warps per 16 x 16 output tile

# Which CUDA XNOR kernel runs: "popc" (xnor.cu, integer popcount), "b1" (xnor_b1.cu, 1-bit
# tensor cores, sm_80+), or "auto": both are timed on the device at hand the first time a size
# class is seen, and the faster one is kept (SPARSEKIT_CUDA_XNOR sets the initial choice).
CUDA_XNOR_KERNELS = ("auto", "popc", "b1")
_cuda_xnor = os.environ.get("SPARSEKIT_CUDA_XNOR", "auto") or "auto"
_chosen: dict[tuple, str] = {}


def set_cuda_xnor_kernel(name: str) -> None:
    global _cuda_xnor
    if name not in CUDA_XNOR_KERNELS:
        raise ValueError(f"CUDA XNOR kernel must be one of {CUDA_XNOR_KERNELS}, got {name!r}")
    _cuda_xnor = name


@contextlib.contextmanager
def use_cuda_xnor_kernel(name: str) -> Iterator[None]:
    old = _cuda_xnor
    set_cuda_xnor_kernel(name)
    try:
        yield
    finally:
        set_cuda_xnor_kernel(old)


def _has_b1(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _run(kernel: str, a, b, out, M, N, W, K, last_bits) -> None:
    args = (as_cupy(a), as_cupy(b), as_cupy(out), np.int64(M), np.int64(N), np.int64(W), np.int64(K),
            np.int64(last_bits))
    if kernel == "b1":
        grid = ((N + B1_TILE - 1) // B1_TILE, (M + B1_TILE - 1) // B1_TILE, 1)
        launch("xnor_b1.cu", "xnor_gemm_b1_kernel", grid, (B1_THREADS, 1, 1), args, a.device)
    else:
        grid = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE, 1)
        launch("xnor.cu", "xnor_gemm_kernel", grid, (TILE, TILE, 1), args, a.device)


def _time_ms(fn, reps: int = 3) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()  # compiles on first use
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def _kernel_for(a, b, out, M, N, W, K, last_bits) -> str:
    if _cuda_xnor != "auto":
        if _cuda_xnor == "b1" and not _has_b1(a.device):
            raise RuntimeError("the b1 tensor-core XNOR kernel needs compute capability 8.0 or later")
        return _cuda_xnor
    if not _has_b1(a.device):
        return "popc"
    key = (a.device.index, torch.cuda.get_device_capability(a.device), min(M, 4096).bit_length(),
           min(N, 4096).bit_length(), min(W, 1024).bit_length())
    if key not in _chosen:  # measured once per device and size class, on these very operands
        times = {k: _time_ms(lambda k=k: _run(k, a, b, out, M, N, W, K, last_bits)) for k in ("popc", "b1")}
        _chosen[key] = min(times, key=times.get)
    return _chosen[key]


@xnor_gemm_kernels.register("cuda", ("cuda",), available=cupy_available)
def xnor_gemm_cuda(a, b, K: int, last_bits: int = 0):
    if a.device.type != "cuda":
        raise ValueError(f"the cuda backend needs CUDA tensors, got a on {a.device}")
    a, b = a.contiguous(), b.contiguous()
    M, N, W = a.shape[0], b.shape[0], a.shape[1]
    out = torch.empty(M, N, dtype=torch.int32, device=a.device)
    if M and N:
        last_bits = last_bits or (K % 64 or 64)
        _run(_kernel_for(a, b, out, M, N, W, K, last_bits), a, b, out, M, N, W, K, last_bits)
    return out


@binary_linear_kernels.register("cuda", ("cuda",), available=cupy_available)
def binary_linear_cuda(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    x2 = x.reshape(-1, in_features)
    dots = xnor_gemm_cuda(pack_signs(x2), weight_packed, in_features)
    y = dots.to(x.dtype) * weight_scale
    if input_scale:
        y = y * input_scale_of(x2)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_packed.shape[0])


@binary_conv2d_kernels.register("cuda", ("cuda",), available=cupy_available)
def binary_conv2d_cuda(x, weight_packed, weight_scale, bias, in_channels: int, kernel_size, stride, padding,
                       dilation):
    N, Cin, H, W = x.shape
    xw = pack_signs(x.permute(0, 2, 3, 1)).reshape(N, H, W, packed_words(Cin))
    cols, (OH, OW) = im2col_words(xw, Cin, kernel_size, stride, padding, dilation)
    C_out, (kh, kw) = weight_packed.shape[0], kernel_size
    w = pad_conv_rows(clear_padding_bits(weight_packed.view(C_out, kh * kw, -1), Cin).view(C_out, -1), Cin, kh, kw)
    dots = xnor_gemm_cuda(cols, w, kernel_size[0] * kernel_size[1] * Cin, 64)  # padding bits all zero
    y = dots.to(x.dtype) * weight_scale
    if bias is not None:
        y = y + bias
    return y.view(N, OH, OW, -1).permute(0, 3, 1, 2).contiguous()
