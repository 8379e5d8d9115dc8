"""Triton kernel for ``sparsekit::bsr_linear`` (GPU; CPU under ``TRITON_INTERPRET=1``).

One program computes a ``BM x bh`` tile of ``y``: block-row ``r`` of ``W`` against
``BM`` rows of ``x``, looping over the stored blocks of that row. Blocks of at
least 16 x 16 use ``tl.dot`` (tensor cores); thinner blocks (e.g. 1 x 32) use a
broadcast-multiply-reduce. Accumulates in fp32 for every input dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._triton import (AUTOTUNE, DOT_DTYPES, HAS_TRITON, compile_cases, dot_precision, interpreting, next_pow2,
                       tile_configs)
from ..backend import triton_available
from .op import bsr_linear_kernels
from .reference import propagate_nonfinite

if HAS_TRITON:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    def _configs():
        return tile_configs(("BM",), ((16, 4, 2), (32, 4, 3), (64, 4, 3), (128, 8, 3)))

    @triton.jit
    def _bsr_linear_kernel(
        x_ptr, v_ptr, col_ptr, row_ptr, b_ptr, y_ptr,
        M, N, K, M_BUCKET,
        stride_xm, stride_xk, stride_ym, stride_yn,
        BH: tl.constexpr, BW: tl.constexpr, BHP: tl.constexpr, BWP: tl.constexpr,
        HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr, BM: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        r = tl.program_id(1)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_i = tl.arange(0, BHP)
        offs_j = tl.arange(0, BWP)
        m_ok = offs_m < M
        w_mask = (offs_i < BH)[:, None] & (offs_j < BW)[None, :]
        start = tl.load(row_ptr + r)
        end = tl.load(row_ptr + r + 1)
        acc = tl.zeros((BM, BHP), dtype=tl.float32)
        w_ptrs = v_ptr + start.to(tl.int64) * (BH * BW) + offs_i[:, None] * BW + offs_j[None, :]
        for b in range(start, end):
            c = tl.load(col_ptr + b).to(tl.int64)
            kk = c * BW + offs_j
            xt = tl.load(
                x_ptr + offs_m[:, None] * stride_xm + kk[None, :] * stride_xk,
                mask=m_ok[:, None] & ((kk < K) & (offs_j < BW))[None, :],
                other=0.0,
            )
            w = tl.load(w_ptrs, mask=w_mask, other=0.0)
            w_ptrs += BH * BW
            if USE_DOT:
                acc += tl.dot(xt, tl.trans(w), input_precision=PRECISION)
            else:
                acc += tl.sum(xt[:, None, :].to(tl.float32) * w[None, :, :].to(tl.float32), axis=2)
        offs_n = r * BH + offs_i
        n_ok = (offs_n < N) & (offs_i < BH)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(
            y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
            acc.to(y_ptr.dtype.element_ty),
            mask=m_ok[:, None] & n_ok[None, :],
        )

    _bsr_linear_autotuned = triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "BH", "BW"])(_bsr_linear_kernel)

    def aot_cases():
        """The launches the ahead-of-time check compiles (every autotune config each): 32 x 32 blocks
        (tl.dot) for every dtype / PRECISION the launcher passes, 16 x 16 blocks without bias,
        1 x 32 blocks (no tl.dot) per dtype, and a K that is no multiple of 16."""
        def case(spec, dt, bh, bw, precision="tf32", bias=True, plain=()):
            meta = dict(BH=bh, BW=bw, BHP=max(16, next_pow2(bh)), BWP=max(16, next_pow2(bw)), HAS_BIAS=bias,
                        USE_DOT=bh >= 16 and bw >= 16, PRECISION=precision)
            ptrs = dict(x_ptr=dt, v_ptr=dt, col_ptr="i32", row_ptr="i32", b_ptr=dt, y_ptr=dt)
            # contiguous x2 and y: unit inner strides; the launcher's fixed tile is BM=64, 4 warps
            return compile_cases(_bsr_linear_kernel, spec, ptrs, meta, _configs(), tile_configs(("BM",), ((64, 4, 3),)),
                                 ones=("stride_xk", "stride_yn"), plain=plain)

        cases = [c for dt, prec in DOT_DTYPES for c in case(f"{dt} {prec} 32x32", dt, 32, 32, prec)]
        cases += case("bf16 16x16 no bias", "bf16", 16, 16, bias=False)
        cases += [c for dt in ("fp32", "fp16", "bf16") for c in case(f"{dt} 1x32", dt, 1, 32)]
        return cases + case("fp16 32x32 K%16!=0", "fp16", 32, 32, plain=("K", "stride_xm"))

    @torch.library.triton_op("sparsekit::_bsr_linear_triton", mutates_args=())
    def _bsr_linear_triton_op(x: Tensor, values: Tensor, col_indices: Tensor, row_offsets: Tensor,
                              bias: Optional[Tensor], out_features: int, in_features: int) -> Tensor:
        interpret = interpreting(x)
        N, K = out_features, in_features
        lead = x.shape[:-1]
        x2 = x.reshape(-1, K)
        M = x2.shape[0]
        nnz, bh, bw = values.shape
        y = torch.empty(M, N, dtype=x.dtype, device=x.device)
        if M == 0 or N == 0:
            return y.reshape(*lead, N)
        if K == 0 or nnz == 0:
            y.zero_()
            if bias is not None:
                y += bias
            return propagate_nonfinite(x2, y, col_indices, row_offsets, (bh, bw)).reshape(*lead, N)
        Nb = -(-N // bh)
        values = values.contiguous()
        use_dot = bh >= 16 and bw >= 16
        precision = dot_precision(x)
        args = (
            x2, values, col_indices, row_offsets, bias if bias is not None else values, y,
            M, N, K, next_pow2(M), x2.stride(0), x2.stride(1), y.stride(0), y.stride(1),
        )
        meta = dict(
            BH=bh, BW=bw, BHP=max(16, next_pow2(bh)), BWP=max(16, next_pow2(bw)),
            HAS_BIAS=bias is not None, USE_DOT=use_dot, PRECISION=precision,
        )
        if interpret or not AUTOTUNE:  # autotuning under the interpreter only costs time
            bm = 16 if interpret else 64
            wrap_triton(_bsr_linear_kernel)[(triton.cdiv(M, bm), Nb)](*args, **meta, BM=bm, num_warps=4)
        else:
            grid = lambda META: (triton.cdiv(M, META["BM"]), Nb)  # noqa: E731
            wrap_triton(_bsr_linear_autotuned)[grid](*args, **meta)
        return propagate_nonfinite(x2, y, col_indices, row_offsets, (bh, bw)).reshape(*lead, N)

    def bsr_linear_triton(*args):
        """The op's Triton kernel, through its own op ``sparsekit::_bsr_linear_triton`` (a
        ``torch.library.triton_op``: its launches go through ``wrap_triton``, so tracing sees them)."""
        return torch.ops.sparsekit._bsr_linear_triton(*args)

    bsr_linear_kernels.register("triton", ("cuda", "cpu"), available=triton_available)(bsr_linear_triton)
    bsr_linear_kernels.trace_into("triton", torch.ops.sparsekit._bsr_linear_triton.default)
