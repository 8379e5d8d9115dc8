"""CPU kernel for ``dwsep_conv2d``: the native fused kernel (``csrc/dwsep_impl.h``), fp32,
NCHW or channels_last memory (other strides are made contiguous first).

In channels_last the pointwise product reads the weight transposed, in panels of 64 output
channels ([ceil(C_out / 64), C, 64], :func:`pointwise_panels`). The op makes that copy itself
on each call (in parallel, 16 x 16 blocks); ``DepthwiseSeparableConv2d`` keeps its own copy
between eager calls and passes it in (``pw_panels``), since the copy moves the whole weight
again: a 7 x 7 image with 1024 channels took 1.6x as long with it (AMD EPYC, 2 threads).
"""

from __future__ import annotations

import torch

from .. import _ext
from .._conv import conv_output_size, is_channels_last
from .._ext import as_numpy
from .op import dwsep_conv2d_kernels


def pointwise_panels(pw_weight: torch.Tensor) -> torch.Tensor:
    """The channels_last kernel's layout of ``pw_weight [Co, C, 1, 1]``: ``[ceil(Co / 64), C, 64]``,
    panel p holding output channels 64p .. 64p + 63 (zeros past Co) for every input channel."""
    Co, C = pw_weight.shape[:2]
    panels = (Co + 63) // 64
    wt = torch.zeros(panels * 64, C, dtype=torch.float32)
    wt[:Co] = pw_weight.detach().reshape(Co, C)
    return wt.reshape(panels, 64, C).transpose(1, 2).contiguous()


def _is_fp32(x, *rest) -> bool:
    return x.dtype == torch.float32


@dwsep_conv2d_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def dwsep_conv2d_cpu(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int, act2: int,
                     pw_panels=None):
    """``pw_panels``: :func:`pointwise_panels` of ``pw_weight`` made by the caller (channels_last
    only; the kernel checks its shape), or None for the kernel to make them."""
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
                   list(padding), list(dilation), act1, act2, nhwc, torch.get_num_threads(),
                   as_numpy(pw_panels) if nhwc and pw_panels is not None else None)
    return y


def _opt(t):
    return None if t is None else as_numpy(t)
