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


def dwsep_conv2d_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int,
                           act2: int):
    """``dw_weight [C, 1, kh, kw]``, ``pw_weight [Co, C, 1, 1]``; biases ``[C]`` / ``[Co]`` or None."""
    h = F.conv2d(x, dw_weight, dw_bias, tuple(stride), tuple(padding), tuple(dilation), groups=x.shape[1])
    h = apply_activation(h, act1)
    y = F.conv2d(h, pw_weight, pw_bias)
    return apply_activation(y, act2)
