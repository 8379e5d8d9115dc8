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


def binary_linear_reference(x, weight_packed, weight_scale, bias, in_features: int, input_scale: bool):
    """XNOR-Net linear: ``(sign(x) @ sign(W).T) * weight_scale * (mean|x| per row if input_scale) + bias``."""
    w = unpack_signs(weight_packed, in_features, torch.float64)
    xs = sign_pm1(x).double()
    y = torch.nn.functional.linear(xs, w) * weight_scale.double()
    if input_scale:
        y = y * x.double().abs().mean(dim=-1, keepdim=True)
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)
