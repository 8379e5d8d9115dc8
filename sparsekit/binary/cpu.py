"""CPU kernels for the binary ops: the native ``_C.xnor_gemm`` (VPOPCNTDQ on AVX-512 CPUs
that have it, hardware POPCNT on AVX2/AVX-512, portable otherwise) and, for
``binary_linear``, the native sign packing of x followed by the XNOR GEMM with its fused
float epilogue (weight scale, activation scale, bias)."""

from __future__ import annotations

import torch

from .. import _ext
from .._conv import conv_output_size, is_channels_last
from .._ext import as_numpy
from .format import clear_padding_bits, packed_words
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
    """Packs each pixel's channels and gathers the receptive fields as words in one native pass
    (from NCHW, or from channels_last memory as it is), then one XNOR GEMM whose scale/bias
    epilogue writes the NCHW output."""
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    N, Cin, H, W = x.shape
    nthreads = torch.get_num_threads()
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = conv_output_size(H, W, kernel_size, stride, padding, dilation)
    nhwc = is_channels_last(x)
    xin = x.permute(0, 2, 3, 1) if nhwc else x.contiguous()
    C_out = weight_packed.shape[0]
    row_words = C.xnor_row_words(kh * kw * packed_words(Cin), N * OH * OW, C_out, True, nthreads)
    cols = torch.empty(N * OH * OW, row_words, dtype=torch.int64)
    C.conv_im2col(xin.detach().numpy(), cols.numpy(), [kh, kw], [sh, sw], [ph, pw], [dh, dw], nhwc, nthreads)
    out = torch.empty(N, C_out, OH, OW, dtype=torch.float32)
    # every padding bit is zero in both operands (the weight's cleared here, as the reference
    # ignores them): nothing to mask (last_bits=64); the epilogue writes NCHW directly (out_hw)
    w = clear_padding_bits(weight_packed.view(C_out, kh * kw, -1), Cin).view(C_out, -1)
    if row_words > w.shape[1]:
        w = torch.nn.functional.pad(w, (0, row_words - w.shape[1]))
    C.xnor_gemm(cols.numpy(), as_numpy(w), out.numpy(), kh * kw * Cin, nthreads, as_numpy(weight_scale), None,
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
