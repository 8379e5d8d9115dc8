"""Triton kernel for ``sparsekit::dwsep_conv2d`` (GPU; CPU under ``TRITON_INTERPRET=1``).

One program computes a ``BP x BN`` tile of the output: ``BP`` output pixels of one image by
``BN`` output channels. Per block of ``BC`` input channels it computes the depthwise output of
its pixels in registers (``KH x KW`` masked loads, so padding and image edges read zeros), adds
the depthwise bias, applies act1, and multiplies the block into the accumulator with ``tl.dot``
against the matching ``BC x BN`` slice of the pointwise weight: the depthwise output never goes
to memory. Inputs and outputs are addressed through their strides, so NCHW and channels_last
take the same kernel; fp16 / bf16 / fp32, accumulation in fp32.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._conv import conv_output_size, is_channels_last
from .._triton import (AUTOTUNE, DOT_DTYPES, HAS_TRITON, compile_cases, dot_precision, interpreting, next_pow2,
                       tile_configs)
from ..backend import triton_available
from .op import dwsep_conv2d_kernels

if HAS_TRITON:
    import triton
    import triton.language as tl
    from torch.library import wrap_triton

    @triton.jit
    def _act(v, ACT: tl.constexpr):
        if ACT == 1:
            v = tl.maximum(v, 0.0)
        elif ACT == 2:
            v = tl.minimum(tl.maximum(v, 0.0), 6.0)
        elif ACT == 3:
            v = v * tl.sigmoid(v)
        return v

    def _configs():  # BP, BN, BC, num_warps, num_stages
        return tile_configs(("BP", "BN", "BC"), ((64, 64, 32, 4, 2), (128, 64, 32, 4, 2), (64, 128, 32, 4, 2),
                                                 (128, 128, 32, 8, 2), (32, 64, 64, 4, 2)))

    @triton.jit
    def _dwsep_kernel(
        x_ptr, wd_ptr, bd_ptr, wp_ptr, bp_ptr, y_ptr,
        C, H, W, Co, OH, OW, SH, SW, PH, PW, DH, DW,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        KH: tl.constexpr, KW: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
        HAS_BD: tl.constexpr, HAS_BP: tl.constexpr, PRECISION: tl.constexpr,
        BP: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr,
    ):
        pid_p = tl.program_id(0)
        pid_n = tl.program_id(1)
        n = tl.program_id(2).to(tl.int64)
        offs_p = pid_p * BP + tl.arange(0, BP)
        offs_o = pid_n * BN + tl.arange(0, BN)
        p_ok = offs_p < OH * OW
        o_ok = offs_o < Co
        oh = offs_p // OW
        ow = offs_p % OW
        acc = tl.zeros((BP, BN), dtype=tl.float32)
        for c0 in range(0, C, BC):
            offs_c = c0 + tl.arange(0, BC)
            c_ok = offs_c < C
            d = tl.zeros((BP, BC), dtype=tl.float32)
            for i in tl.static_range(KH):
                ih = oh * SH - PH + i * DH
                h_ok = p_ok & (ih >= 0) & (ih < H)
                for j in tl.static_range(KW):
                    iw = ow * SW - PW + j * DW
                    ok = h_ok & (iw >= 0) & (iw < W)
                    xv = tl.load(x_ptr + n * sxn + offs_c[None, :] * sxc + (ih * sxh + iw * sxw)[:, None],
                                 mask=ok[:, None] & c_ok[None, :], other=0.0)
                    wv = tl.load(wd_ptr + offs_c * (KH * KW) + (i * KW + j), mask=c_ok, other=0.0)
                    # zero padding adds nothing (not 0 * weight, NaN for a non-finite weight)
                    d += tl.where(ok[:, None], xv.to(tl.float32) * wv.to(tl.float32)[None, :], 0.0)
            if HAS_BD:
                d += tl.load(bd_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            d = _act(d, ACT1)
            w = tl.load(wp_ptr + offs_o[None, :] * C + offs_c[:, None], mask=c_ok[:, None] & o_ok[None, :],
                        other=0.0)
            acc += tl.dot(d.to(w.dtype), w, input_precision=PRECISION)
        if HAS_BP:
            acc += tl.load(bp_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
        acc = _act(acc, ACT2)
        out = y_ptr + n * syn + offs_o[None, :] * syc + (oh * syh + ow * syw)[:, None]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & o_ok[None, :])

    _dwsep_autotuned = triton.autotune(configs=_configs(), key=["C", "Co", "OH", "OW"])(_dwsep_kernel)

    def aot_cases():
        """The launches the ahead-of-time check compiles (every autotune config each): 3 x 3 stride 1
        (all of stride, padding and dilation 1) NCHW for every dtype / PRECISION the launcher passes,
        channels_last without biases, 5 x 5 stride 2 channels_last; each activation code in each
        place once; the fixed tiles of SPARSEKIT_TRITON_AUTOTUNE=0 on the largest (fp32, 5 x 5).
        Image sides (56 x 56) are no multiples of 16. The dwsep compiles are the slowest (seconds
        each): the specialisations are chosen to cover each case once, not all their products."""
        sides = ("H", "W", "OH", "OW")
        nchw = dict(ones=("sxw", "syw", "SH", "SW", "PH", "PW", "DH", "DW"), plain=sides + ("sxh", "syh"))
        nhwc = dict(ones=("sxc", "syc", "SH", "SW", "PH", "PW", "DH", "DW"), plain=sides)
        nhwc_s2 = dict(ones=("sxc", "syc", "DH", "DW"), plain=sides + ("SH", "SW", "PH", "PW"))
        # the launcher's fixed tile: BN = min(128, max(16, next_pow2(Co))), 4 warps, the default 3 stages
        fixed = tile_configs(("BP", "BN", "BC"), tuple((64, bn, 32, 4, 3) for bn in (16, 32, 64, 128)))

        def case(spec, dt, act1, act2, layout, k=3, precision="tf32", bias=True, with_fixed=False):
            meta = dict(KH=k, KW=k, ACT1=act1, ACT2=act2, HAS_BD=bias, HAS_BP=bias, PRECISION=precision)
            ptrs = dict(x_ptr=dt, wd_ptr=dt, bd_ptr=dt, wp_ptr=dt, bp_ptr=dt, y_ptr=dt)
            return compile_cases(_dwsep_kernel, spec, ptrs, meta, _configs(), fixed if with_fixed else (), **layout)

        names, cases = ("-", "relu", "relu6", "silu"), []
        for dt, prec in DOT_DTYPES:
            tf32 = (dt, prec) == ("fp32", "tf32")
            a1, a2 = (0, 2) if tf32 else (2, 0)  # none / relu6 there, relu6 / none (MobileNet's) elsewhere
            cases += case(f"{dt} {prec} 3x3 {names[a1]}/{names[a2]}", dt, a1, a2, nchw, precision=prec, with_fixed=tf32)
        cases += case("bf16 3x3 silu/silu channels_last no biases", "bf16", 3, 3, nhwc, bias=False)
        return cases + case("fp16 5x5 stride 2 relu/relu channels_last", "fp16", 1, 1, nhwc_s2, k=5, with_fixed=True)

    @torch.library.triton_op("sparsekit::_dwsep_conv2d_triton", mutates_args=())
    def _dwsep_conv2d_triton_op(x: Tensor, dw_weight: Tensor, dw_bias: Optional[Tensor], pw_weight: Tensor,
                                pw_bias: Optional[Tensor], stride: list[int], padding: list[int], dilation: list[int],
                                act1: int, act2: int, pw_panels: Optional[Tensor] = None) -> Tensor:
        # pw_panels: the native CPU kernel's copy of the pointwise weight, unused here
        interpret = interpreting(x)
        N, C, H, W = x.shape
        Co, (kh, kw) = pw_weight.shape[0], dw_weight.shape[2:]
        OH, OW = conv_output_size(H, W, (kh, kw), stride, padding, dilation)
        fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        y = torch.empty(N, Co, OH, OW, dtype=x.dtype, device=x.device, memory_format=fmt)
        if y.numel() == 0:
            return y
        wd = dw_weight.reshape(C, kh * kw).contiguous()
        wp = pw_weight.reshape(Co, C).contiguous()
        # stride, padding and dilation are run-time arguments (one compiled kernel serves them all)
        args = (x, wd, dw_bias if dw_bias is not None else wd, wp, pw_bias if pw_bias is not None else wp, y,
                C, H, W, Co, OH, OW, *stride, *padding, *dilation, *x.stride(), *y.stride())
        meta = dict(KH=kh, KW=kw, ACT1=act1, ACT2=act2, HAS_BD=dw_bias is not None, HAS_BP=pw_bias is not None,
                    PRECISION=dot_precision(x))
        if interpret or not AUTOTUNE:
            bp, bn, bc = (16, 16, 16) if interpret else (64, min(128, max(16, next_pow2(Co))), 32)
            grid = (triton.cdiv(OH * OW, bp), triton.cdiv(Co, bn), N)
            wrap_triton(_dwsep_kernel)[grid](*args, **meta, BP=bp, BN=bn, BC=bc, num_warps=4)
        else:
            grid = lambda META: (triton.cdiv(OH * OW, META["BP"]), triton.cdiv(Co, META["BN"]), N)  # noqa: E731
            wrap_triton(_dwsep_autotuned)[grid](*args, **meta)
        return y

    def dwsep_conv2d_triton(*args):
        """The op's Triton kernel, through its own op ``sparsekit::_dwsep_conv2d_triton`` (a
        ``torch.library.triton_op``: its launches go through ``wrap_triton``, so tracing sees them)."""
        return torch.ops.sparsekit._dwsep_conv2d_triton(*args)

    dwsep_conv2d_kernels.register("triton", ("cuda", "cpu"), available=triton_available)(dwsep_conv2d_triton)
    dwsep_conv2d_kernels.trace_into("triton", torch.ops.sparsekit._dwsep_conv2d_triton.default)
