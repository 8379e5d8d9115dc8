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
    the non-finite taps are added, inside the image only, to the convolution of the finite ones."""
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    C, (kh, kw) = x.shape[1], weight.shape[2:]
    finite = torch.isfinite(weight)
    if torch.compiler.is_compiling() or not any(padding) or bool(finite.all()):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)
    h = F.conv2d(x, torch.where(finite, weight, 0), bias, stride, padding, dilation, groups=C)
    unfold = dict(kernel_size=(kh, kw), dilation=dilation, padding=padding, stride=stride)
    inside = F.unfold(x.new_ones(1, 1, *x.shape[2:]), **unfold)[0] > 0  # [kh * kw, OH * OW]
    h = h.clone()
    for c, _, i, j in (~finite).nonzero().tolist():
        taps = F.unfold(x[:, c : c + 1], **unfold)[:, i * kw + j]  # [N, OH * OW]
        add = torch.where(inside[i * kw + j], taps * weight[c, 0, i, j], torch.zeros_like(taps))
        h[:, c] += add.view(h.shape[0], *h.shape[2:])
    return h


def dwsep_conv2d_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int,
                           act2: int):
    """``dw_weight [C, 1, kh, kw]``, ``pw_weight [Co, C, 1, 1]``; biases ``[C]`` / ``[Co]`` or None.
    NaN/Inf: as PyTorch's convolutions, except that zero padding adds nothing (see
    :func:`depthwise_conv2d_reference`)."""
    h = depthwise_conv2d_reference(x, dw_weight, dw_bias, stride, padding, dilation)
    h = apply_activation(h, act1)
    y = F.conv2d(h, pw_weight, pw_bias)
    return apply_activation(y, act2)
