"""CPU kernel for ``dwsep_conv2d``: the native fused kernel (``csrc/dwsep_impl.h``), fp32,
NCHW or channels_last memory (other strides are made contiguous first).

In channels_last the pointwise product reads the weight transposed, in panels of 64 output
channels; the kernel makes that copy itself on each call (in parallel, 16 x 16 blocks), so no
state derived from the weight outlives a call: a weight written in place or through ``.data``
is read as it is, from any thread and under ``inference_mode``.
"""

from __future__ import annotations

import torch

from .. import _ext
from .._conv import conv_output_size, is_channels_last
from .._ext import as_numpy
from .op import dwsep_conv2d_kernels


def _is_fp32(x, *rest) -> bool:
    return x.dtype == torch.float32


@dwsep_conv2d_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def dwsep_conv2d_cpu(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int, act2: int):
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    N, Cin, H, W = x.shape
    Co, (kh, kw) = pw_weight.shape[0], dw_weight.shape[2:]
    OH, OW = conv_output_size(H, W, (kh, kw), stride, padding, dilation)
    nhwc = is_channels_last(x)
    if nhwc:
        y = torch.empty(N, Co, OH, OW, dtype=x.dtype, memory_format=torch.channels_last)
        xm, ym = x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)  # the memory, as contiguous [N, H, W, C]
    else:
        y = torch.empty(N, Co, OH, OW, dtype=x.dtype)
        xm, ym = x.contiguous(), y
    C.dwsep_conv2d(as_numpy(xm), as_numpy(dw_weight.reshape(Cin, kh * kw)), _opt(dw_bias),
                   as_numpy(pw_weight.reshape(Co, Cin)), _opt(pw_bias), ym.numpy(), [kh, kw], list(stride),
                   list(padding), list(dilation), act1, act2, nhwc, torch.get_num_threads(), None)
    return y


def _opt(t):
    return None if t is None else as_numpy(t)
