"""CPU kernel for ``codebook_linear``.

Small M: the native table-lookup matmul on the packed indices (``csrc/codebook_impl.h``); the
weight is never expanded. Large M, where a lookup costs as much as a multiply-add and PyTorch's
dense GEMM is the faster exact path: panels of PANEL_ROWS weight rows are decoded to floats
(kept in cache, never the whole matrix) and multiplied by PyTorch, panel by panel.
"""

from __future__ import annotations

import torch

from .. import _ext
from .._ext import as_numpy
from ..backend import native_cpu_applies
from .op import check_codebook_linear_args, codebook_linear_kernels, codebook_linear_q8_kernels


PANEL_ROWS = 512
# activation rows from which the decoded-panel path beats table lookup (measured, K = N = 4096):
# a lookup does 4 / field multiply-adds per lane, so the wider the field the sooner
DENSE_FROM_M = {1: 96, 2: 32, 3: 16, 4: 16}


def _is_fp32(x, *rest) -> bool:
    return x.dtype == torch.float32


@codebook_linear_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def codebook_linear_cpu(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    N = indices.shape[0]
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, in_features).contiguous()
    M, nthreads = x2.shape[0], torch.get_num_threads()
    if M >= DENSE_FROM_M[bits]:
        out = _decoded_panels(C, x2, indices, codebook, bias, bits, group_size, nthreads)
    else:
        out = torch.empty(M, N, dtype=torch.float32)
        C.codebook_linear(as_numpy(x2), as_numpy(indices), as_numpy(codebook),
                          None if bias is None else as_numpy(bias), out.numpy(), bits, group_size, nthreads)
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], N)


def _decoded_panels(C, x2, indices, codebook, bias, bits, group_size, nthreads):
    N, K = indices.shape[0], x2.shape[1]
    out_t = torch.empty(N, x2.shape[0], dtype=torch.float32)  # y.T: each panel fills whole rows
    panel = torch.empty(min(PANEL_ROWS, N), K, dtype=torch.float32)
    cb, idx = as_numpy(codebook), indices.contiguous()
    for r0 in range(0, N, PANEL_ROWS):
        r1 = min(N, r0 + PANEL_ROWS)
        w = panel[: r1 - r0]
        C.codebook_decode(idx[r0:r1].numpy(), cb, w.numpy(), bits, group_size, r0, nthreads)
        if bias is None:
            torch.mm(w, x2.T, out=out_t[r0:r1])
        else:
            torch.addmm(bias[r0:r1, None], w, x2.T, out=out_t[r0:r1])
    return out_t.T.contiguous()


@codebook_linear_q8_kernels.register("cpu", ("cpu",), available=_ext.available, supports=_is_fp32)
def codebook_linear_q8_cpu(x, indices, codebook, bias, in_features: int, bits: int, group_size: int):
    """The int8 option: AMX-INT8 tiles where the CPU has them (from 16 rows), else integer dot
    products; the same results either way (exact int32 sums of the same quantized values)."""
    C = _ext.native()
    if x.dtype != torch.float32:
        raise TypeError(f"the cpu backend runs float32 only, got x {x.dtype}")
    N = indices.shape[0]
    x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, in_features).contiguous()
    out = torch.empty(x2.shape[0], N, dtype=torch.float32)
    # the centroids are quantized natively, as reference.quantize_codebook_q8
    C.codebook_linear_q8(as_numpy(x2), as_numpy(indices), as_numpy(codebook), None if bias is None else as_numpy(bias),
                         out.numpy(), bits, group_size, torch.get_num_threads())
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], N)


class NativeQ8:
    """The int8 option's eager path for a module: a float32 CPU call goes straight to the native
    kernel. A module call through the op's checks and backend choice costs about 15 us of
    Python, more than the kernel itself on a batch-1 layer (measured: 26 us vs 11 us for a
    1568 -> 512 2-bit layer). The layer's own tensors are checked once and kept as NumPy views,
    keyed by each tensor's data pointer, shape, strides and dtype; only the input is checked on
    every call. The views share the tensors' memory, so values written in place (also through
    ``.data``) are read as they are, and they keep that memory alive, so a data pointer seen
    again is the same memory, never a freed address reused by another tensor; a replaced tensor
    (``p.data = ...``) has another pointer and is checked again. No version counter is read:
    inference tensors have none. Key and views are swapped as one tuple, so threads calling
    one module see a consistent pair."""

    def __init__(self):
        self._views = None  # (key, views)

    @staticmethod
    def applies(x: torch.Tensor, in_features: int) -> bool:
        return (type(x) is torch.Tensor and x.dim() == 2 and x.shape[1] == in_features and x.is_contiguous()
                and native_cpu_applies(x))

    def __call__(self, x, indices, codebook, bias, in_features: int, bits: int, group_size: int) -> torch.Tensor:
        key = tuple(None if t is None else (t.data_ptr(), t.shape, t.stride(), t.dtype, t.device)
                    for t in (indices, codebook, bias))
        cached = self._views
        if cached is None or cached[0] != key:
            check_codebook_linear_args(x, indices, codebook, bias, in_features, bits, group_size)
            cached = (key, (as_numpy(indices), as_numpy(codebook), None if bias is None else as_numpy(bias)))
            self._views = cached
        out = torch.empty(x.shape[0], indices.shape[0], dtype=torch.float32)
        _ext.native().codebook_linear_q8(x.numpy(), *cached[1], out.numpy(), bits, group_size,
                                         torch.get_num_threads())
        return out

    def __deepcopy__(self, memo):  # views of another module's tensors are never shared
        return NativeQ8()
