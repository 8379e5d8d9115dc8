"""Plain-PyTorch reference for the binary ops (the test oracle)."""

from __future__ import annotations

import torch

from .format import unpack_signs


def xnor_gemm_reference(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """int32 ``[M, N]``: dot products of the +-1 rows packed in ``a`` ``[M, W]`` and ``b`` ``[N, W]``."""
    sa = unpack_signs(a, K, torch.float64)
    sb = unpack_signs(b, K, torch.float64)
    return (sa @ sb.T).round().to(torch.int32)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (the packing convention: sign(0) = +1)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def input_scale_of(x: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's input scale, mean |x| over each row (``[..., 1]``); an empty row's is 0, as its
    dot product is (the kernels' rule: a layer with no inputs gives its bias)."""
    return x.abs().sum(dim=-1, keepdim=True) / max(x.shape[-1], 1)


def binary_linear_reference(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    """XNOR-Net linear: ``(sign(x) @ sign(W).T) * weight_scale * (mean|x| per row if input_scale) + bias``."""
    w = unpack_signs(weight_packed, in_features, torch.float64)
    xs = sign_pm1(x).double()
    y = torch.nn.functional.linear(xs, w) * weight_scale.double()
    if input_scale:
        y = y * input_scale_of(x.double())
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)


def binary_conv2d_reference(x, weight_packed, weight_scale, bias, in_channels: int, kernel_size, stride, padding,
                            dilation):
    """XNOR-Net convolution: ``conv2d(sign(pad(x, 0)), sign(W)) * weight_scale + bias``, padding
    with zeros *before* binarizing, so padded positions count as +1 (sign(0) = +1)."""
    from .format import packed_words

    kh, kw = kernel_size
    C_out = weight_packed.shape[0]
    Wc = packed_words(in_channels)
    w = unpack_signs(weight_packed.reshape(C_out, kh, kw, Wc), in_channels, torch.float64).permute(0, 3, 1, 2)
    xs = sign_pm1(torch.nn.functional.pad(x.double(), (padding[1], padding[1], padding[0], padding[0])))
    y = torch.nn.functional.conv2d(xs, w, None, stride, 0, dilation) * weight_scale.double()[:, None, None]
    if bias is not None:
        y = y + bias.double()[:, None, None]
    return y.to(x.dtype)


def sign_linear_reference(x, weight_packed, weight_scale, bias, in_features: int):
    """BinaryConnect linear: real ``x`` times the +-1 weight signs, ``* weight_scale + bias``."""
    w = unpack_signs(weight_packed, in_features, torch.float64)
    y = torch.nn.functional.linear(x.double(), w) * weight_scale.double()
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)
