"""Plain-PyTorch reference of the fused depthwise-separable convolution (the test oracle).

``dwsep_conv2d_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
act1, act2)``: a depthwise ``k x k`` convolution (``groups = C``), activation ``act1``, a
pointwise ``1 x 1`` convolution, activation ``act2``; the depthwise output is materialised here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# activation codes shared by the op, its kernels and the module
ACTIVATIONS = ("identity", "relu", "relu6", "silu")


def activation_code(name) -> int:
    if name is None:
        name = "identity"
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS} or None, got {name!r}")
    return ACTIVATIONS.index(name)


def apply_activation(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == 1:
        return F.relu(x)
    if code == 2:
        return F.hardtanh(x, 0.0, 6.0)
    if code == 3:
        return F.silu(x)
    return x


def depthwise_conv2d_reference(x, weight, bias, stride, padding, dilation):
    """The depthwise convolution with the op's rule for zero padding: a padded position adds
    nothing, so a non-finite weight counts only at taps inside the image (PyTorch's float32
    depthwise kernels skip padded taps too, but its single-channel and float64 convolutions
    multiply them, 0 * Inf = NaN). With finite weights that is ``F.conv2d`` itself; otherwise
    every tap's products, kept inside the image, are summed explicitly."""
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    (N, C, H, W), (kh, kw) = x.shape, weight.shape[2:]
    if torch.compiler.is_compiling() or not any(padding) or bool(torch.isfinite(weight.detach()).all()):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)
    unfold = dict(kernel_size=(kh, kw), dilation=dilation, padding=padding, stride=stride)
    OH = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = F.unfold(x, **unfold).view(N, C, kh * kw, OH * OW)
    inside = F.unfold(x.new_ones(1, 1, H, W), **unfold).view(1, 1, kh * kw, OH * OW) > 0
    products = torch.where(inside, taps * weight.reshape(1, C, kh * kw, 1), torch.zeros((), dtype=x.dtype))
    h = products.sum(dim=2).view(N, C, OH, OW)
    return h if bias is None else h + bias.view(1, C, 1, 1)


def dwsep_conv2d_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int,
                           act2: int):
    """``dw_weight [C, 1, kh, kw]``, ``pw_weight [Co, C, 1, 1]``; biases ``[C]`` / ``[Co]`` or None.
    NaN/Inf: as PyTorch's convolutions, except that zero padding adds nothing (see
    :func:`depthwise_conv2d_reference`)."""
    h = depthwise_conv2d_reference(x, dw_weight, dw_bias, stride, padding, dilation)
    h = apply_activation(h, act1)
    y = F.conv2d(h, pw_weight, pw_bias)
    return apply_activation(y, act2)
