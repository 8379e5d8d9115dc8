"""CPU kernel for ``sparsekit::xnor_gemm``: the native ``_C.xnor_gemm`` (VPOPCNTDQ on
AVX-512 CPUs that have it, hardware POPCNT on AVX2/AVX-512, portable otherwise)."""

from __future__ import annotations

import torch

from .. import _ext
from .._ext import as_numpy
from .op import xnor_gemm_kernels


@xnor_gemm_kernels.register("cpu", ("cpu",), available=_ext.available)
def xnor_gemm_cpu(a, b, K: int):
    C = _ext.native()
    if a.device.type != "cpu":
        raise ValueError(f"the cpu backend needs CPU tensors, got a on {a.device}")
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    C.xnor_gemm(as_numpy(a), as_numpy(b), out.numpy(), K, torch.get_num_threads())
    return out
