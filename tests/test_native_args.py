"""Every entry point of the native extension, called directly with hostile arguments: offsets and
sizes whose arithmetic would overflow int64, negative, zero and huge sizes, strides, paddings,
dilations, kernel sizes, thread counts, group sizes and bit widths, mismatched shapes, empty
codebooks. Each must raise ValueError or TypeError before a kernel reads anything. A few valid
but extreme calls (empty products, 16385 channels, a stride past the input) must run correctly on
every instruction set.

A wrong argument that slipped through would crash the process, so the cases run in a child
Python process (this file run as a script), as few times as possible: the child reports each case
on a line as it finishes; if it dies, the case it was running is reported as crashed and the
rest run in a new child.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sparsekit import _ext

pytestmark = pytest.mark.skipif(not _ext.available(), reason="needs the native extension")

BIG = 2**63 - 1  # the largest int64
ISAS = _ext.supported_isas() if _ext.available() else []

# name -> (function, what it must do: an exception class or tuple of them, or None for "returns")
CASES: dict = {}


def register(name, fn, expect=(ValueError, TypeError), isas=False):
    """A case; with isas=True one per supported instruction set (for cases that reach a kernel)."""
    for isa in ISAS if isas else [None]:
        CASES[f"{name}[{isa}]" if isa else name] = (fn, expect, isa)


def case(expect=(ValueError, TypeError), isas=False):
    """Registers the decorated function as a case under its name."""

    def decorate(fn):
        register(fn.__name__, fn, expect, isas)
        return fn

    return decorate


def f32(*shape):
    return np.zeros(shape, np.float32)


def i32(*shape):
    return np.zeros(shape, np.int32)


def i64(*shape):
    return np.zeros(shape, np.int64)


def unaligned_f32(rows, cols):
    """A C-contiguous, writable float32 array one byte off its element alignment."""
    return np.frombuffer(bytearray(rows * cols * 4 + 1), np.float32, count=rows * cols, offset=1).reshape(rows, cols)


def readonly(a):
    a.flags.writeable = False
    return a


def C():
    return _ext.native()


# ---------------------------------------------------------------- instruction set


@case()
def set_cpu_isa_unknown_name():
    C().set_cpu_isa("avx9000")


@case(TypeError)
def set_cpu_isa_not_a_string():
    C().set_cpu_isa(3)


# ---------------------------------------------------------------- bsr_linear


def bsr(N=8, K=8, bh=4, bw=4):
    """A valid BSR weight [N, K] with one block at (0, 0)."""
    nb = -(-N // bh)
    row_off = np.zeros(nb + 1, np.int32)
    row_off[1:] = 1
    return f32(1, bh, bw), i32(1), row_off


def bsr_linear(x=None, values=None, cols=None, row_off=None, bias=None, out=None, N=8, K=8, small_m=24, nthreads=1):
    v, c, r = bsr()  # for N = K = 8
    C().bsr_linear(f32(2, 8) if x is None else x, v if values is None else values, c if cols is None else cols,
                   r if row_off is None else row_off, bias, f32(2, 8) if out is None else out, N, K, small_m,
                   nthreads)


@case(None, isas=True)
def bsr_linear_valid():
    bsr_linear()
    bsr_linear(small_m=-1)


@case()
def bsr_linear_negative_N():
    bsr_linear(N=-8)


@case()
def bsr_linear_negative_K():
    bsr_linear(K=-8, x=f32(2, 0))


@case()
def bsr_linear_row_count_overflows():  # ceil(N / 1) + 1 row offsets would wrap
    bsr_linear(values=f32(0, 1, 1), cols=i32(0), row_off=i32(1), N=BIG, K=8, out=f32(2, 0))


@case()
def bsr_linear_zero_block_size():
    bsr_linear(values=f32(1, 0, 4))


@case()
def bsr_linear_row_offsets_decrease():
    bsr_linear(row_off=np.array([0, 1, 0], np.int32), values=f32(0, 4, 4), cols=i32(0))


@case()
def bsr_linear_row_offsets_do_not_end_at_nnz():
    bsr_linear(row_off=np.array([0, 1, 3], np.int32))


@case()
def bsr_linear_column_index_out_of_range():
    bsr_linear(cols=np.array([2], np.int32))


@case()
def bsr_linear_negative_column_index():
    bsr_linear(cols=np.array([-1], np.int32))


@case()
def bsr_linear_empty_weight_with_a_huge_block():  # x padded to a 2^40-wide block: bounded, not allocated
    bsr_linear(values=f32(0, 1, 2**40), cols=i32(0), row_off=i32(3), N=2, K=2, x=f32(1, 2), out=f32(1, 2))


@case()
def bsr_linear_empty_weight_with_a_huge_block_large_m():
    bsr_linear(values=f32(0, 2**40, 1), cols=i32(0), row_off=i32(2), N=2, K=2, x=f32(1, 2), out=f32(1, 2),
               small_m=-1)


@case()
def bsr_linear_x_width_mismatch():
    bsr_linear(x=f32(2, 7))


@case()
def bsr_linear_out_shape_mismatch():
    bsr_linear(out=f32(3, 8))


@case()
def bsr_linear_bias_length_mismatch():
    bsr_linear(bias=f32(7))


@case()
def bsr_linear_out_read_only():
    bsr_linear(out=readonly(f32(2, 8)))


@case()
def bsr_linear_x_unaligned():
    bsr_linear(x=unaligned_f32(2, 8))


@case()
def bsr_linear_x_not_contiguous():
    bsr_linear(x=f32(2, 16)[:, ::2])


@case(TypeError)
def bsr_linear_x_float64():
    bsr_linear(x=np.zeros((2, 8)))


@case()
def bsr_linear_zero_threads():
    bsr_linear(nthreads=0)


@case()
def bsr_linear_negative_threads():
    bsr_linear(nthreads=-4)


@case()
def bsr_linear_absurd_thread_count():  # per-thread scratch is sized by it
    bsr_linear(nthreads=2**30, small_m=-1)


@case(TypeError)
def bsr_linear_thread_count_past_int():
    bsr_linear(nthreads=2**40)


@case(None)
def bsr_linear_empty_batch_with_a_huge_panel():  # nothing to compute: no workspace is sized
    bsr_linear(values=f32(0, 1, 2**40), cols=i32(0), row_off=i32(3), N=2, K=2, x=f32(0, 2), out=f32(0, 2),
               small_m=-1)


# ---------------------------------------------------------------- XNOR GEMM, signs


def xnor(a=None, b=None, out=None, K=64, nthreads=1, **kw):
    C().xnor_gemm(i64(2, 1) if a is None else a, i64(3, 1) if b is None else b, i32(2, 3) if out is None else out, K,
                  nthreads, **kw)


@case(None, isas=True)
def xnor_gemm_valid():
    xnor()


@case()
def xnor_gemm_negative_K():
    xnor(K=-1)


@case()
def xnor_gemm_K_overflows_word_count():  # ceil(K / 64) must not be computed as (K + 63) / 64
    xnor(K=BIG)


@case()
def xnor_gemm_row_bits_overflow():  # 64 * words would wrap
    xnor(a=i64(0, 2**58), b=i64(0, 2**58), out=i32(0, 0), K=BIG, last_bits=5)


@case()
def xnor_gemm_K_past_int32_output():
    xnor(a=i64(0, 2**26), b=i64(0, 2**26), out=i32(0, 0), K=2**32)


@case()
def xnor_gemm_last_bits_too_large():
    xnor(last_bits=65)


@case()
def xnor_gemm_negative_last_bits():
    xnor(last_bits=-1)


@case()
def xnor_gemm_word_count_mismatch():
    xnor(b=i64(3, 2))


@case()
def xnor_gemm_negative_out_hw():
    xnor(out=f32(2, 3), col_scale=f32(3), out_hw=-1)


@case()
def xnor_gemm_out_hw_does_not_divide_M():
    xnor(a=i64(3, 1), out=f32(1, 3, 1, 2), col_scale=f32(3), out_hw=2)


@case()
def xnor_gemm_out_hw_without_epilogue():
    xnor(out_hw=2)


@case()
def xnor_gemm_col_scale_length_mismatch():
    xnor(out=f32(2, 3), col_scale=f32(2))


@case()
def xnor_gemm_zero_threads():
    xnor(nthreads=0)


@case(None, isas=True)
def xnor_gemm_rows_of_no_words():  # K = 0 with an explicit last_bits: nothing may be read before a row
    out = np.full((2, 3), 7, np.int32)
    xnor(a=i64(2, 0), b=i64(3, 0), out=out, K=0, last_bits=5)
    assert not out.any()
    outf = np.full((2, 3), 7, np.float32)
    xnor(a=i64(2, 0), b=i64(3, 0), out=outf, K=0, last_bits=5, col_scale=np.ones(3, np.float32))
    assert not outf.any()


@case()
def sign_linear_without_scale():
    C().sign_linear(f32(2, 64), i64(3, 1), None, None, f32(2, 3), 1)


@case()
def sign_linear_word_count_mismatch():
    C().sign_linear(f32(2, 64), i64(3, 2), f32(3), None, f32(2, 3), 1)


@case()
def sign_linear_zero_threads():
    C().sign_linear(f32(2, 64), i64(3, 1), f32(3), None, f32(2, 3), 0)


@case(None, isas=True)
def sign_linear_many_rows_no_columns():  # an empty product: no per-row scratch for 2^40 rows
    C().sign_linear(f32(2**40, 0), i64(0, 0), f32(0), None, f32(2**40, 0), 1)


@case()
def pack_signs_width_mismatch():
    C().pack_signs(f32(2, 65), i64(2, 1), None, 1)


@case()
def pack_signs_scale_length_mismatch():
    C().pack_signs(f32(2, 64), i64(2, 1), f32(3), 1)


@case()
def pack_signs_scale_read_only():
    C().pack_signs(f32(2, 64), i64(2, 1), readonly(f32(2)), 1)


@case()
def pack_signs_zero_threads():
    C().pack_signs(f32(2, 64), i64(2, 1), None, 0)


@case()
def xnor_row_words_negative():
    C().xnor_row_words(-1, 4, 4, False, 1)


@case()
def xnor_row_words_rounding_overflows():
    C().xnor_row_words(BIG, 4, 4, False, 1)


@case()
def xnor_row_words_zero_threads():
    C().xnor_row_words(3, 4, 4, False, 0)


# ---------------------------------------------------------------- convolutions


def im2col(x=None, out=None, kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), nhwc=False, nthreads=1):
    C().conv_im2col(f32(1, 3, 4, 4) if x is None else x, i64(16, 9) if out is None else out, list(kernel),
                    list(stride), list(padding), list(dilation), nhwc, nthreads)


@case(None, isas=True)
def conv_im2col_valid():
    im2col()


@case()
def conv_im2col_dilation_times_kernel_wraps():  # 2^62 * (5 - 1) wraps to 0
    im2col(x=f32(1, 1, 4, 4), out=i64(16, 25), kernel=(5, 1), padding=(0, 0), dilation=(2**62, 1))


@case()
def conv_im2col_padding_overflows():
    im2col(padding=(2**62, 0))


@case()
def conv_im2col_kernel_area_overflows():  # 2^32 x 2^32 taps
    im2col(kernel=(2**32, 2**32), padding=(2**31, 2**31))


@case()
def conv_im2col_output_pixels_overflow():  # an empty batch, but (2^41 + 1)^2 output pixels per image
    im2col(x=f32(0, 1, 1, 1), out=i64(0, 1), kernel=(1, 1), padding=(2**40, 2**40))


@case()
def conv_im2col_zero_stride():
    im2col(stride=(0, 1))


@case()
def conv_im2col_negative_padding():
    im2col(padding=(-1, 1))


@case()
def conv_im2col_zero_dilation():
    im2col(dilation=(1, 0))


@case()
def conv_im2col_zero_kernel():
    im2col(kernel=(0, 3))


@case()
def conv_im2col_three_kernel_entries():
    im2col(kernel=(3, 3, 3))


@case(TypeError)
def conv_im2col_kernel_past_int64():
    im2col(kernel=(2**64, 3))


@case()
def conv_im2col_no_channels():
    im2col(x=f32(1, 0, 4, 4))


@case()
def conv_im2col_kernel_larger_than_padded_input():
    im2col(kernel=(7, 7))


@case()
def conv_im2col_row_count_mismatch():
    im2col(out=i64(15, 9))


@case()
def conv_im2col_rows_too_short():
    im2col(out=i64(16, 8))


@case()
def conv_im2col_zero_threads():
    im2col(nthreads=0)


@case(None, isas=True)
def conv_im2col_stride_past_the_input():
    out = i64(1, 1)
    im2col(x=np.ones((1, 1, 3, 3), np.float32), out=out, kernel=(1, 1), stride=(BIG, BIG), padding=(0, 0))
    assert out[0, 0] == 1


def dwsep(x=None, wd=None, bd=None, wp=None, bp=None, out=None, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
          dilation=(1, 1), act1=0, act2=0, nhwc=False, nthreads=1, wpt=None):
    C().dwsep_conv2d(f32(1, 4, 5, 5) if x is None else x, f32(4, 9) if wd is None else wd, bd,
                     f32(6, 4) if wp is None else wp, bp, f32(1, 6, 5, 5) if out is None else out, list(kernel),
                     list(stride), list(padding), list(dilation), act1, act2, nhwc, nthreads, wpt)


@case(None, isas=True)
def dwsep_conv2d_valid():
    dwsep()
    dwsep(x=f32(1, 5, 5, 4), out=f32(1, 5, 5, 6), nhwc=True)


@case(None, isas=True)
def dwsep_conv2d_more_channels_than_a_tile():  # 16384 / C was 0 and divided by
    C_ = 16385
    wd, wp = np.ones((C_, 1), np.float32), np.ones((1, C_), np.float32)
    for x in (np.ones((1, C_, 1, 1), np.float32), np.ones((1, 1, 1, C_), np.float32)):
        out = f32(1, 1, 1, 1)
        dwsep(x=x, wd=wd, wp=wp, out=out, kernel=(1, 1), padding=(0, 0), nhwc=x.shape[3] == C_)
        assert out[0, 0, 0, 0] == C_


@case(None, isas=True)
def dwsep_conv2d_stride_past_the_input():  # ceil(padding / stride) must not be (padding + stride - 1) / stride
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 4, 2), np.float32)  # C = 16 (whole vectors: no per-pixel path), H = 4, W = 2
    wd, bd, wp = (rng.standard_normal(s, np.float32) for s in ((16, 1), (16,), (2, 16)))
    for nhwc in (False, True):
        xm = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x
        outs = [f32(1, 4, 1, 2) if nhwc else f32(1, 2, 4, 1) for _ in range(2)]
        # one output column, the padding's (the bias alone), with a stride of 2^63 - 1 and of 100
        for out, sw in zip(outs, (BIG, 100)):
            dwsep(x=xm, wd=wd, bd=bd, wp=wp, out=out, kernel=(1, 1), stride=(1, sw), padding=(0, 2), nhwc=nhwc)
        assert np.array_equal(outs[0], outs[1])


@case()
def dwsep_conv2d_kernel_area_overflows():
    dwsep(kernel=(2**32, 2**32), padding=(2**31, 2**31))


@case()
def dwsep_conv2d_dilation_times_kernel_wraps():
    dwsep(kernel=(5, 1), wd=f32(4, 5), dilation=(2**62, 1), padding=(0, 0))


@case()
def dwsep_conv2d_zero_stride():
    dwsep(stride=(1, 0))


@case()
def dwsep_conv2d_negative_dilation():
    dwsep(dilation=(-1, 1))


@case()
def dwsep_conv2d_bad_activation():
    dwsep(act2=4)


@case()
def dwsep_conv2d_negative_activation():
    dwsep(act1=-1)


@case()
def dwsep_conv2d_depthwise_weight_mismatch():
    dwsep(wd=f32(4, 8))


@case()
def dwsep_conv2d_pointwise_weight_mismatch():
    dwsep(wp=f32(6, 5))


@case()
def dwsep_conv2d_out_mismatch():
    dwsep(out=f32(1, 6, 5, 4))


@case()
def dwsep_conv2d_bias_length_mismatch():
    dwsep(bd=f32(5))


@case()
def dwsep_conv2d_transposed_weight_for_nchw():
    dwsep(wpt=f32(1, 4, 64))


@case()
def dwsep_conv2d_transposed_weight_mismatch():
    dwsep(x=f32(1, 5, 5, 4), out=f32(1, 5, 5, 6), nhwc=True, wpt=f32(2, 4, 64))


@case()
def dwsep_conv2d_zero_threads():
    dwsep(nthreads=0)


@case()
def dwsep_conv2d_absurd_thread_count():
    dwsep(nthreads=2**31 - 1)


# ---------------------------------------------------------------- codebooks


def codebook(fn, M=2, N=4, K=16, bits=2, group_size=4, nthreads=1, x=None, idx=None, cb=None, out=None, bias=None):
    """Calls _C.<fn> (codebook_linear or codebook_linear_q8) with valid arguments but those given."""
    field = {1: 1, 2: 2, 3: 4}.get(bits, 4)
    x = f32(M, K) if x is None else x
    idx = i32(N, -(-K // (32 // field))) if idx is None else idx
    cb = f32(1, 2 ** min(max(bits, 1), 4)) if cb is None else cb
    getattr(C(), fn)(x, idx, cb, bias, f32(M, N) if out is None else out, bits, group_size, nthreads)


def bad_3bit_indices(N=4, words=2, row=2, word=1, value=8 << 4):
    """3-bit index words [N, words] holding one field >= 8."""
    idx = i32(N, words)
    idx[row, word] = value
    return idx


def codebook_cases(fn):
    def add(name, expect=(ValueError, TypeError), isas=False, **kw):
        register(f"{fn}_{name}", lambda: codebook(fn, **kw), expect, isas)

    for bits in (1, 2, 3, 4):
        add(f"valid_{bits}_bits", None, True, bits=bits)
    add("huge_group_size", None, True, group_size=BIG)
    add("huge_group_size_with_an_empty_codebook", group_size=BIG, cb=f32(0, 4))  # ceil(4 / BIG) came out as 0
    add("no_rows_and_an_empty_codebook", None, True, N=0, cb=f32(0, 4))
    add("zero_group_size", group_size=0)
    add("negative_group_size", group_size=-4)
    add("zero_bits", bits=0)
    add("five_bits", bits=5)
    add("negative_bits", bits=-1)
    # in_features past what the kernels address (no rows, no batch: nothing allocated)
    add("too_many_index_words", M=0, N=0, K=2**40, cb=f32(0, 4))
    add("index_width_mismatch", idx=i32(4, 2))
    add("codebook_width_mismatch", cb=f32(1, 8))
    add("codebook_group_count_mismatch", cb=f32(2, 4))
    add("out_shape_mismatch", out=f32(2, 5))
    add("bias_length_mismatch", bias=f32(3))
    add("zero_threads", nthreads=0)
    add("int64_indices", TypeError, idx=i64(4, 1))
    add("three_bit_index_of_eight", isas=True, bits=3, idx=bad_3bit_indices())
    add("three_bit_index_of_fifteen_many_rows", isas=True, M=20, N=40, bits=3, group_size=40,
        idx=bad_3bit_indices(N=40, row=39, word=0, value=0xF))
    add("three_bit_index_of_eight_empty_batch", M=0, bits=3, idx=bad_3bit_indices())  # no kernel runs


codebook_cases("codebook_linear")
codebook_cases("codebook_linear_q8")


def decode(idx=None, cb=None, out=None, bits=2, group_size=4, row0=0, nthreads=1):
    C().codebook_decode(i32(2, 1) if idx is None else idx, f32(1, 4) if cb is None else cb,
                        f32(2, 16) if out is None else out, bits, group_size, row0, nthreads)


@case(None)
def codebook_decode_valid():
    decode()
    decode(row0=2)


@case()
def codebook_decode_row_offset_overflows():  # row0 + rows - 1 wrapped and passed the range check
    decode(group_size=3, row0=BIG)


@case()
def codebook_decode_rows_past_the_codebook():
    decode(row0=3)


@case()
def codebook_decode_negative_row0():
    decode(row0=-1)


@case()
def codebook_decode_zero_group_size():
    decode(group_size=0)


@case()
def codebook_decode_bits_out_of_range():
    decode(bits=7)


@case()
def codebook_decode_index_width_mismatch():
    decode(idx=i32(2, 2))


@case()
def codebook_decode_empty_codebook():
    decode(cb=f32(0, 4))


@case()
def codebook_decode_zero_threads():
    decode(nthreads=0)


@case()
def codebook_decode_three_bit_index_of_nine():
    idx = i32(2, 2)
    idx[1, 1] = 9 << 12
    decode(idx=idx, cb=f32(1, 8), bits=3)


@case()
def codebook_decode_three_bit_padding_field_set():  # K = 12 of 16 fields: the unused ones must be 0
    idx = i32(2, 2)
    idx[0, 1] = np.int32(-(2**31))  # the last field's high bit
    decode(idx=idx, cb=f32(1, 8), bits=3, out=f32(2, 12))


# ---------------------------------------------------------------- Huffman coding


def lengths(*ls):
    return np.array(ls, np.uint8)


@case(None)
def huffman_round_trip():
    data = C().huffman_encode(np.array([0, 1, 2, 2], np.int32), lengths(1, 2, 2))
    out = i32(4)
    C().huffman_decode(data, lengths(1, 2, 2), out)
    assert out.tolist() == [0, 1, 2, 2]


@case()
def huffman_encode_symbol_out_of_range():
    C().huffman_encode(np.array([3], np.int32), lengths(1, 1))


@case()
def huffman_encode_negative_symbol():
    C().huffman_encode(np.array([-1], np.int32), lengths(1, 1))


@case()
def huffman_encode_symbol_without_code():
    C().huffman_encode(np.array([1], np.int32), lengths(1, 0))


@case()
def huffman_encode_code_longer_than_32():
    C().huffman_encode(np.array([0], np.int32), lengths(33, 1))


@case()
def huffman_encode_over_subscribed_lengths():
    C().huffman_encode(np.array([0], np.int32), lengths(1, 1, 1))


@case(TypeError)
def huffman_encode_lengths_not_uint8():
    C().huffman_encode(np.array([0], np.int32), np.array([1, 1], np.int32))


@case()
def huffman_encode_lengths_two_dimensional():
    C().huffman_encode(np.array([0], np.int32), np.ones((1, 2), np.uint8))


@case()
def huffman_decode_truncated_stream():
    C().huffman_decode(b"", lengths(1, 1), i32(1))


@case()
def huffman_decode_invalid_code():
    C().huffman_decode(b"\xff\xff\xff\xff\xff", lengths(1, 0, 0), i32(1))


@case()
def huffman_decode_over_subscribed_lengths():
    C().huffman_decode(b"\x00", lengths(1, 1, 1), i32(1))


@case()
def huffman_decode_out_read_only():
    C().huffman_decode(b"\x00", lengths(1, 1), readonly(i32(1)))


@case(TypeError)
def huffman_decode_out_int64():
    C().huffman_decode(b"\x00", lengths(1, 1), i64(1))


@case(TypeError)
def huffman_decode_data_not_bytes():
    C().huffman_decode("x", lengths(1, 1), i32(1))


# ---------------------------------------------------------------- the child


def _run(names):
    print(f"#native\t{C().__file__}", flush=True)
    for name in names:
        fn, expect, isa = CASES[name]
        try:
            if isa:
                C().set_cpu_isa(isa)
            fn()
        except Exception as e:  # noqa: BLE001 (reported, then judged by the parent)
            ok = expect is not None and isinstance(e, expect)
            status = "ok" if ok else "wrong"
            detail = f"{type(e).__name__}: {e}"
        else:
            status = "ok" if expect is None else "wrong"
            detail = "returned"
        print(f"{name}\t{status}\t{detail}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    _run(sys.argv[1:])


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def results():
    """{case: (status, detail)} from as few child processes as crashes require."""
    out, pending = {}, list(CASES)
    while pending:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *pending], capture_output=True, text=True,
                              timeout=600)
        lines = proc.stdout.splitlines()
        assert lines and lines[0].startswith("#native\t"), f"the child did not start:\n{proc.stderr[-4000:]}"
        native = lines[0].split("\t", 1)[1]
        assert os.path.samefile(native, _ext.native().__file__), f"the child loaded another extension: {native}"
        for line in lines[1:]:
            name, status, detail = line.split("\t", 2)
            out[name] = (status, detail)
        pending = [n for n in pending if n not in out]
        if pending:  # the child died running pending[0]
            out[pending[0]] = ("crashed", f"exit status {proc.returncode}:\n{proc.stderr[-4000:]}")
            pending = pending[1:]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_native_entry_point(results, name):
    status, detail = results[name]
    expect = CASES[name][1]
    wanted = "returns" if expect is None else f"raises {getattr(expect, '__name__', expect)}"
    assert status == "ok", f"{name} must {wanted}; it {status}: {detail}"


def test_every_entry_point_is_covered():
    called = {n.split("[")[0] for n in CASES}
    entry_points = [n for n in dir(_ext.native()) if not n.startswith("_") and callable(getattr(_ext.native(), n))]
    for ep in entry_points:
        if ep in ("cpu_isa", "supported_isas"):  # no arguments
            continue
        assert any(c.startswith(ep) for c in called), f"no hostile-argument case calls _C.{ep}"
