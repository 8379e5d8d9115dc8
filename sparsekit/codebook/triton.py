"""Triton kernel for ``sparsekit::codebook_linear`` (GPU; CPU under ``TRITON_INTERPRET=1``).

One program computes a ``BM x BN`` tile of ``y``. Per step of ``BK`` inputs it loads the index
words of its ``BN`` weight rows, pulls each field out in registers, looks the centroids up in
the (tiny, cache-resident) codebook of each row's group and multiplies with ``tl.dot``: the
weight exists only as that register tile, never as a dense matrix in memory. Accumulates in
fp32 for every input dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._triton import (AUTOTUNE, DOT_DTYPES, HAS_TRITON, compile_cases, dot_precision, interpreting, next_pow2,
                       tile_configs)
from ..backend import triton_available
from .format import field_bits
from .op import codebook_linear_kernels

if HAS_TRITON:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    def _configs():  # BM, BN, BK, num_warps, num_stages
        return tile_configs(("BM", "BN", "BK"), ((16, 64, 64, 4, 3), (32, 64, 64, 4, 3), (64, 64, 64, 4, 3),
                                                 (128, 128, 32, 8, 3), (16, 128, 128, 4, 2)))

    @triton.jit
    def _codebook_linear_kernel(
        x_ptr, idx_ptr, cb_ptr, b_ptr, y_ptr,
        M, N, K, Wd, GROUP, M_BUCKET,
        stride_xm, stride_xk, stride_ym, stride_yn,
        FIELD: tl.constexpr, PER: tl.constexpr, NCB: tl.constexpr, HAS_BIAS: tl.constexpr,
        PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        m_ok = offs_m < M
        n_ok = offs_n < N
        group = (offs_n // GROUP).to(tl.int64)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < K
            xt = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                         mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            words = tl.load(idx_ptr + offs_n.to(tl.int64)[:, None] * Wd + (offs_k // PER)[None, :],
                            mask=n_ok[:, None] & k_ok[None, :], other=0)
            fields = (words >> ((offs_k % PER) * FIELD)[None, :]) & (NCB - 1)
            w = tl.load(cb_ptr + group[:, None] * NCB + fields, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            acc += tl.dot(xt, tl.trans(w.to(xt.dtype)), input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    _codebook_linear_autotuned = triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "FIELD"])(
        _codebook_linear_kernel)

    def aot_cases():
        """The launches the ahead-of-time check compiles (every autotune config each): 2-bit indices
        for every dtype / PRECISION the launcher passes, 1-, 3- and 4-bit indices (3 without bias),
        and a K that is no multiple of 16."""
        def case(spec, dt, bits, precision="tf32", bias=True, plain=()):
            f = field_bits(bits)
            meta = dict(FIELD=f, PER=32 // f, NCB=2**bits, HAS_BIAS=bias, PRECISION=precision)
            ptrs = dict(x_ptr=dt, idx_ptr="i32", cb_ptr=dt, b_ptr=dt, y_ptr=dt)
            # contiguous x2 and y: unit inner strides; the launcher's fixed tile is an autotune config
            return compile_cases(_codebook_linear_kernel, spec, ptrs, meta, _configs(),
                                 tile_configs(("BM", "BN", "BK"), ((64, 64, 64, 4, 3),)),
                                 ones=("stride_xk", "stride_yn"), plain=plain)

        cases = [c for dt, prec in DOT_DTYPES for c in case(f"{dt} {prec} 2-bit", dt, 2, prec)]
        cases += case("fp16 1-bit", "fp16", 1, plain=("Wd",))  # Wd = K / 32 words per row
        cases += case("bf16 3-bit no bias", "bf16", 3, bias=False)
        cases += case("fp32 tf32 4-bit", "fp32", 4)
        return cases + case("fp16 2-bit K%16!=0", "fp16", 2, plain=("K", "Wd", "stride_xm"))

    @torch.library.triton_op("sparsekit::_codebook_linear_triton", mutates_args=())
    def _codebook_linear_triton_op(x: Tensor, indices: Tensor, codebook: Tensor, bias: Optional[Tensor],
                                   in_features: int, bits: int, group_size: int) -> Tensor:
        interpret = interpreting(x)
        N, K = indices.shape[0], in_features
        lead = x.shape[:-1]
        x2 = x.reshape(-1, K)
        M = x2.shape[0]
        y = torch.empty(M, N, dtype=x.dtype, device=x.device)
        if M == 0 or N == 0:
            return y.reshape(*lead, N)
        f = field_bits(bits)
        precision = dot_precision(x)
        args = (x2, indices.contiguous(), codebook.contiguous(), bias if bias is not None else codebook, y,
                M, N, K, indices.shape[1], group_size, next_pow2(M),
                x2.stride(0), x2.stride(1), y.stride(0), y.stride(1))
        # NCB: fields are masked to 2**bits entries (3-bit indices sit in 4-bit fields)
        meta = dict(FIELD=f, PER=32 // f, NCB=2**bits, HAS_BIAS=bias is not None, PRECISION=precision)
        if interpret or not AUTOTUNE:
            bm, bn, bk = (16, 16, 32) if interpret else (64, 64, 64)
            grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
            wrap_triton(_codebook_linear_kernel)[grid](*args, **meta, BM=bm, BN=bn, BK=bk, num_warps=4)
        else:
            grid = lambda META: (triton.cdiv(M, META["BM"]), triton.cdiv(N, META["BN"]))  # noqa: E731
            wrap_triton(_codebook_linear_autotuned)[grid](*args, **meta)
        return y.reshape(*lead, N)

    def codebook_linear_triton(*args):
        """The op's Triton kernel, through its own op ``sparsekit::_codebook_linear_triton`` (a
        ``torch.library.triton_op``: its launches go through ``wrap_triton``, so tracing sees them)."""
        return torch.ops.sparsekit._codebook_linear_triton(*args)

    codebook_linear_kernels.register("triton", ("cuda", "cpu"), available=triton_available)(codebook_linear_triton)
    codebook_linear_kernels.trace_into("triton", torch.ops.sparsekit._codebook_linear_triton.default)
