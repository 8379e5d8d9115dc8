"""CPU kernels for the binary ops: the native ``_C.xnor_gemm`` (VPOPCNTDQ on AVX-512 CPUs
that have it, hardware POPCNT on AVX2/AVX-512, portable otherwise) and, for
``binary_linear``, the native sign packing of x followed by the XNOR GEMM with its fused
float epilogue (weight scale, activation scale, bias)."""

from __future__ import annotations

import torch

from .. import _ext
from .._ext import as_numpy
from .format import im2col_words, packed_words, pad_conv_rows
from .op import binary_conv2d_kernels, binary_linear_kernels, sign_linear_kernels, xnor_gemm_kernels


@xnor_gemm_kernels.register("cpu", ("cpu",), available=_ext.available)
def xnor_gemm_cpu(a, b, K: int):
    C = _ext.native()
    if a.device.type != "cpu":
        raise ValueError(f"the cpu backend needs CPU tensors, got a on {a.device}")
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    C.xnor_gemm(as_numpy(a), as_numpy(b), out.numpy(), K, torch.get_num_threads())
    return out


def _is_fp32(x, *rest) -> bool:
    return x.dtype == torch.float32


@binary_linear_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def binary_linear_cpu(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    K, N = in_features, weight_packed.shape[0]
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, K).contiguous()
    M = x2.shape[0]
    nthreads = torch.get_num_threads()
    xp = torch.empty(M, packed_words(K), dtype=torch.int64)
    scale = torch.empty(M, dtype=torch.float32) if input_scale else None
    C.pack_signs(as_numpy(x2), xp.numpy(), None if scale is None else scale.numpy(), nthreads)
    out = torch.empty(M, N, dtype=torch.float32)
    C.xnor_gemm(xp.numpy(), as_numpy(weight_packed), out.numpy(), K, nthreads, as_numpy(weight_scale),
                None if scale is None else scale.numpy(), None if bias is None else as_numpy(bias))
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], N)


@binary_conv2d_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def binary_conv2d_cpu(x, weight_packed, weight_scale, bias, in_channels: int, kernel_size, stride, padding,
                      dilation):
    """Packs each pixel's channels once (channels last), gathers the receptive fields as words,
    then one XNOR GEMM whose scale/bias epilogue writes the NCHW output."""
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    N, Cin, H, W = x.shape
    nthreads = torch.get_num_threads()
    Wc = packed_words(Cin)
    # channels-last pixels (free for channels_last input; PyTorch's conversion beats permute().contiguous())
    pixels = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(N * H * W, Cin).contiguous()
    xw = torch.empty(N * H * W, Wc, dtype=torch.int64)
    C.pack_signs(pixels.numpy(), xw.numpy(), None, nthreads)
    cols, (OH, OW) = im2col_words(xw.view(N, H, W, Wc), Cin, kernel_size, stride, padding, dilation)
    C_out = weight_packed.shape[0]
    out = torch.empty(N, C_out, OH, OW, dtype=torch.float32)
    K = kernel_size[0] * kernel_size[1] * Cin
    # every padding bit is zero in both operands: nothing to mask (last_bits=64); the epilogue
    # writes NCHW directly (out_hw)
    w = pad_conv_rows(weight_packed, Cin, *kernel_size)
    C.xnor_gemm(cols.numpy(), as_numpy(w), out.numpy(), K, nthreads, as_numpy(weight_scale), None,
                None if bias is None else as_numpy(bias), 64, OH * OW)
    return out


@sign_linear_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def sign_linear_cpu(x, weight_packed, weight_scale, bias, in_features: int):
    """BinaryConnect: masked sums of the activations selected by each weight row's bits."""
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, in_features).contiguous()
    out = torch.empty(x2.shape[0], weight_packed.shape[0], dtype=torch.float32)
    C.sign_linear(as_numpy(x2), as_numpy(weight_packed), as_numpy(weight_scale),
                  None if bias is None else as_numpy(bias), out.numpy(), torch.get_num_threads())
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], weight_packed.shape[0])
