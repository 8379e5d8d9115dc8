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

import torch

from .._conv import conv_output_size, is_channels_last
from .._triton import AUTOTUNE, HAS_TRITON, dot_precision, interpreting, next_pow2, tile_configs
from ..backend import triton_available
from .op import dwsep_conv2d_kernels

if HAS_TRITON:
    import triton
    import triton.language as tl

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

    def dwsep_conv2d_triton(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1: int,
                            act2: int, pw_panels=None):  # pw_panels: the native CPU kernel's, unused here
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
            _dwsep_kernel[grid](*args, **meta, BP=bp, BN=bn, BC=bc, num_warps=4)
        else:
            grid = lambda META: (triton.cdiv(OH * OW, META["BP"]), triton.cdiv(Co, META["BN"]), N)  # noqa: E731
            _dwsep_autotuned[grid](*args, **meta)
        return y

    dwsep_conv2d_kernels.register("triton", ("cuda", "cpu"), available=triton_available)(dwsep_conv2d_triton)
