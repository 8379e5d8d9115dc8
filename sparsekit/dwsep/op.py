"""``sparsekit::dwsep_conv2d``: schema, fake and the Python kernels of the fused depthwise ->
pointwise convolution (see :mod:`.reference` for what it computes; the native CPU kernel and its
checks: ``csrc/dwsep/register.cpp``).

The output has the memory format of the input (channels_last in, channels_last out). The op is
for inference: :class:`~sparsekit.nn.DepthwiseSeparableConv2d` runs the reference's PyTorch
convolutions when gradients are needed.
"""

from __future__ import annotations

import torch

from .._checks import FLOAT_DTYPES, check_shape, check_tensor
from .._conv import conv_output_size, is_channels_last
from ..backend import KernelTable
from .reference import ACTIVATIONS, dwsep_conv2d_reference

def check_dwsep_args(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2,
                     pw_panels=None) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, dim=4)
    C = x.shape[1]
    check_tensor("dw_weight", dw_weight, dtypes=(x.dtype,), dim=4, device=x.device)
    if dw_weight.shape[0] != C or dw_weight.shape[1] != 1:
        raise ValueError(f"dw_weight must have shape [{C}, 1, kh, kw] (C = x.shape[1]), got {list(dw_weight.shape)}")
    check_tensor("pw_weight", pw_weight, dtypes=(x.dtype,), dim=4, device=x.device)
    Co = pw_weight.shape[0]
    check_shape("pw_weight", pw_weight, (Co, C, 1, 1))
    for name, b, n in (("dw_bias", dw_bias, C), ("pw_bias", pw_bias, Co)):
        if b is not None:
            check_tensor(name, b, dtypes=(x.dtype,), dim=1, device=x.device)
            check_shape(name, b, (n,))
    for name, v, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if len(v) != 2 or any(int(e) < low for e in v):
            raise ValueError(f"{name} must be two ints >= {low}, got {list(v)}")
    for name, a in (("act1", act1), ("act2", act2)):
        if not 0 <= a < len(ACTIVATIONS):
            raise ValueError(f"{name} must be an activation code in 0..{len(ACTIVATIONS) - 1} {ACTIVATIONS}, got {a}")
    kernel = dw_weight.shape[2:]
    for i, s in enumerate(x.shape[2:]):
        if s + 2 * padding[i] < dilation[i] * (kernel[i] - 1) + 1:
            raise ValueError(f"the padded input ({s + 2 * padding[i]} along dim {i + 2}) is smaller than the "
                             f"dilated kernel ({dilation[i] * (kernel[i] - 1) + 1})")
    if C == 0:
        raise ValueError("x must have at least one channel")


def _fake(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, pw_panels=None):
    check_dwsep_args(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2)
    OH, OW = conv_output_size(x.shape[2], x.shape[3], dw_weight.shape[2:], stride, padding, dilation)
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return x.new_empty(x.shape[0], pw_weight.shape[0], OH, OW).contiguous(memory_format=fmt)


def _reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, pw_panels=None):
    return dwsep_conv2d_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2)


# Depthwise k x k conv -> act1 -> pointwise 1 x 1 conv -> act2, without materialising the
# depthwise output (activation codes: reference.ACTIVATIONS). pw_panels: the channels_last
# kernel's copy of pw_weight (cpu.pointwise_panels) kept by the caller, or None; other kernels
# ignore it.
dwsep_conv2d_kernels = KernelTable(
    "dwsep_conv2d",
    "(Tensor x, Tensor dw_weight, Tensor? dw_bias, Tensor pw_weight, Tensor? pw_bias, int[2] stride, "
    "int[2] padding, int[2] dilation, int act1, int act2, Tensor? pw_panels=None) -> Tensor",
    fake=_fake, check=check_dwsep_args)
dwsep_conv2d_kernels.register("reference", ("any",))(_reference)
dwsep_conv2d = dwsep_conv2d_kernels.op
