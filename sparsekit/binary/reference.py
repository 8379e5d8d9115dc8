"""Plain-PyTorch reference for the binary ops (the test oracle)."""

from __future__ import annotations

import torch

from .format import unpack_signs


def xnor_gemm_reference(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """int32 ``[M, N]``: dot products of the +-1 rows packed in ``a`` ``[M, W]`` and ``b`` ``[N, W]``."""
    sa = unpack_signs(a, K, torch.float64)
    sb = unpack_signs(b, K, torch.float64)
    return (sa @ sb.T).round().to(torch.int32)
