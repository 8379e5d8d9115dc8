"""Every op of the native extension (``torch.ops.sparsekit.*`` with a C++ CPU kernel, from
csrc/<format>/register.cpp), called directly with hostile arguments.

Covered: bsr_linear, xnor_gemm, binary_linear, sign_linear, binary_conv2d, codebook_linear,
codebook_linear_q8, dwsep_conv2d, and the native-only ops _pack_signs, _conv_im2col,
_codebook_decode, _huffman_encode, _huffman_decode, _cpu_isa, _set_cpu_isa, _supported_cpu_isas,
_set_cpu_backend. The arguments: wrong dtypes (TypeError), wrong ranks and shapes, negative, zero
and huge sizes, kernel sizes, strides, paddings, dilations, group sizes and bit widths (sizes
whose arithmetic would overflow int64), inconsistent index arrays (decreasing row offsets,
column indices out of range, 3-bit codebook indices >= 8), empty tensors and codebooks, bad
instruction set names, Huffman streams shorter than their symbol count. Each must raise
ValueError or TypeError naming the argument before a kernel reads anything, never crash, hang or
allocate what the arguments ask without bound. Valid but extreme calls (empty products, 16385
channels, a stride past the input, huge group sizes) and non-contiguous inputs (which the ops
make contiguous) must return the right result, on every instruction set.

The float32 calls run under the default backend ("auto"), so on the native CPU kernel: the child
counts the calls that reach an op's Python fallback (the reference), and a case that was not
meant to reach it fails if one did. Arguments that PyTorch's own schema parser rejects before any
sparsekit code runs (an int past int64, a list for a str) raise its RuntimeError: those cases
expect it (PARSER).

A wrong argument that slipped through would crash the process, so the cases run in a child
Python process (this file run as a script), as few times as possible: the child reports each case
on a line as it finishes; if it dies (or a case runs past CASE_S, when an alarm ends the child),
the case it was running is reported as crashed (or hung) and the rest run in a new child. The child runs in an address space limited to a
little above what it uses after a warm-up (AS_MARGIN), so a huge allocation fails there at once
(as RuntimeError or MemoryError, which the cases do not accept) instead of succeeding lazily.
Under `make sanitize` (SPARSEKIT_EXPECT_NATIVE) the child is checked to load the same extension.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from sparsekit import _ext

pytestmark = pytest.mark.skipif(not _ext.available(), reason="needs the native extension")

BIG = 2**63 - 1  # the largest int64
ISAS = _ext.supported_isas() if _ext.available() else []
PARSER = RuntimeError  # what PyTorch's schema parser raises for an argument of the wrong Python type
HANG_S = 300  # a child that reports nothing for this long is hung
AS_MARGIN = 1 << 30  # address space the child may add after its warm-up
CASE_S = 30  # a case still running after this long is hung: the child is killed (SIGALRM)

# name -> (function, what it must do: an exception class or tuple of them, or None for "returns",
#          the instruction set to run it with or None, whether it may reach the Python fallback,
#          the reason if it is a known bug (an xfail) or None)
CASES: dict = {}


def register(name, fn, expect=(ValueError, TypeError), isas=False, fallback=False, bug=None):
    """A case; with isas=True one per supported instruction set (for cases that reach a kernel)."""
    for isa in ISAS if isas else [None]:
        CASES[f"{name}[{isa}]" if isa else name] = (fn, expect, isa, fallback, bug)


def case(expect=(ValueError, TypeError), isas=False, fallback=False, bug=None):
    """Registers the decorated function as a case under its name."""

    def decorate(fn):
        register(fn.__name__, fn, expect, isas, fallback, bug)
        return fn

    return decorate


def ops():
    return torch.ops.sparsekit


def f32(*shape):
    return torch.zeros(shape, dtype=torch.float32)


def f64(*shape):
    return torch.zeros(shape, dtype=torch.float64)


def i32(*shape):
    return torch.zeros(shape, dtype=torch.int32)


def i64(*shape):
    return torch.zeros(shape, dtype=torch.int64)


def u8(*values):
    return torch.tensor(values, dtype=torch.uint8)


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def strided(t, dim=-1):
    """The same values as t in a non-contiguous tensor (every other element of a tensor twice as long)."""
    shape = list(t.shape)
    shape[dim] *= 2
    big = torch.zeros(shape, dtype=t.dtype)
    idx = [slice(None)] * t.dim()
    idx[dim] = slice(None, None, 2)
    big[tuple(idx)] = t
    out = big[tuple(idx)]
    assert not out.is_contiguous() or t.shape[dim] <= 1 or t.numel() == 0
    return out


def close(a, b, tol=1e-4):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True), (a - b).abs().max()


def equal(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- instruction set, backend switch


@case()
def set_cpu_isa_unknown_name():
    ops()._set_cpu_isa("avx9000")


@case()
def set_cpu_isa_empty_name():
    ops()._set_cpu_isa("")


@case()
def set_cpu_isa_upper_case():
    ops()._set_cpu_isa("AVX2")


@case()
def set_cpu_isa_name_with_a_nul():
    ops()._set_cpu_isa("avx2\x00")


@case()
def set_cpu_isa_name_with_a_space():
    ops()._set_cpu_isa("portable ")


@case()
def set_cpu_isa_very_long_name():
    ops()._set_cpu_isa("avx2" * 100000)


@case()
def set_cpu_isa_unsupported_level():  # a known name above this CPU's best
    above = [n for n in ("amx", "avx512vp", "avx512", "avx2") if n not in ISAS]
    if not above:
        raise ValueError("this CPU supports every level")  # nothing to try: the expected outcome
    ops()._set_cpu_isa(above[-1])


@case(PARSER)
def set_cpu_isa_not_a_string():
    ops()._set_cpu_isa(3)


@case(None)
def set_cpu_isa_every_supported_level():
    for name in ops()._supported_cpu_isas():
        ops()._set_cpu_isa(name)
        assert ops()._cpu_isa() == name
    assert "portable" in ops()._supported_cpu_isas()


@case()
def set_cpu_backend_negative_mode():
    ops()._set_cpu_backend(-1)


@case()
def set_cpu_backend_mode_three():
    ops()._set_cpu_backend(3)


@case()
def set_cpu_backend_huge_mode():
    ops()._set_cpu_backend(BIG)


@case(TypeError)
def set_cpu_backend_native_rejects_float64():  # mode 1 ("cpu"): the native kernel or TypeError
    ops()._set_cpu_backend(1)
    try:
        bsr_linear(x=f64(2, 8), values=f64(1, 4, 4))
    finally:
        ops()._set_cpu_backend(0)


# ---------------------------------------------------------------- bsr_linear


def bsr(N=8, K=8, bh=4, bw=4):
    """A valid BSR weight [N, K] with one block at (0, 0)."""
    nb = -(-N // bh)
    row_off = torch.zeros(nb + 1, dtype=torch.int32)
    row_off[1:] = 1
    return f32(1, bh, bw), i32(1), row_off


def bsr_linear(x=None, values=None, cols=None, row_off=None, bias=None, N=8, K=8):
    v, c, r = bsr()  # for N = K = 8
    return ops().bsr_linear(f32(2, 8) if x is None else x, v if values is None else values,
                            c if cols is None else cols, r if row_off is None else row_off, bias, N, K)


def random_bsr(N=12, K=20, bh=4, bw=5, seed=1):
    """A random BSR weight [N, K] with about half its blocks stored, and its dense matrix."""
    from sparsekit.block_sparse.format import bsr_to_dense

    g = torch.Generator().manual_seed(seed)
    Nb, Kb = -(-N // bh), -(-K // bw)
    mask = torch.rand(Nb, Kb, generator=g) < 0.5
    mask[0, 0] = True
    rows, cols = mask.nonzero(as_tuple=True)
    values = torch.randn(len(rows), bh, bw, generator=g)
    row_off = torch.zeros(Nb + 1, dtype=torch.int32)
    row_off[1:] = torch.cumsum(torch.bincount(rows, minlength=Nb), 0)
    cols = cols.to(torch.int32)
    return values, cols, row_off, bsr_to_dense(values, cols, row_off, (N, K))


@case(None, isas=True)
def bsr_linear_valid():
    values, cols, row_off, dense = random_bsr()
    bias = randn(12, seed=2)
    for M in (3, 30):  # the small-M path and the packed-panel path
        x = randn(M, 20, seed=M)
        close(ops().bsr_linear(x, values, cols, row_off, bias, 12, 20), x @ dense.T + bias)
        close(ops().bsr_linear(x, values, cols, row_off, None, 12, 20), x @ dense.T)


@case(None, isas=True)
def bsr_linear_leading_dimensions():
    values, cols, row_off, dense = random_bsr()
    x = randn(2, 3, 20)
    y = ops().bsr_linear(x, values, cols, row_off, None, 12, 20)
    assert y.shape == (2, 3, 12)
    close(y, x @ dense.T)


@case(None, isas=True)
def bsr_linear_non_contiguous_inputs():
    values, cols, row_off, dense = random_bsr()
    bias = randn(12, seed=2)
    for M in (3, 30):
        x = randn(M, 20, seed=M)
        want = x @ dense.T + bias
        close(ops().bsr_linear(strided(x), values, cols, row_off, bias, 12, 20), want)
        close(ops().bsr_linear(x.T.contiguous().T, values, cols, row_off, bias, 12, 20), want)  # column-major
        vt = values.transpose(1, 2).contiguous().transpose(1, 2)
        close(ops().bsr_linear(x, vt, strided(cols), strided(row_off), strided(bias), 12, 20), want)


@case(None, isas=True)
def bsr_linear_no_in_features():  # x [..., 0] must not be reshaped to [-1, 0] (ambiguous for PyTorch)  # K = 0: no blocks, the output is the bias
    bias = randn(8)
    y = bsr_linear(x=f32(2, 0), values=f32(0, 4, 4), cols=i32(0), row_off=i32(3), bias=bias, K=0)
    equal(y, bias.expand(2, 8).contiguous())


@case(None)
def bsr_linear_no_out_features():
    assert bsr_linear(values=f32(0, 4, 4), cols=i32(0), row_off=i32(1), N=0).shape == (2, 0)


@case(None)
def bsr_linear_empty_batch():
    assert bsr_linear(x=f32(0, 8)).shape == (0, 8)


@case(None, fallback=True)
def bsr_linear_float64_runs_the_reference():  # "auto": other dtypes are the reference's
    y = bsr_linear(x=f64(2, 8), values=torch.ones(1, 4, 4, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == (2, 8)


@case(TypeError)
def bsr_linear_x_int32():
    bsr_linear(x=i32(2, 8))


@case(TypeError)
def bsr_linear_x_bool():
    bsr_linear(x=torch.zeros(2, 8, dtype=torch.bool))


@case(TypeError)
def bsr_linear_values_float64():
    bsr_linear(values=f64(1, 4, 4))


@case(TypeError)
def bsr_linear_values_float16():
    bsr_linear(values=torch.zeros(1, 4, 4, dtype=torch.float16))


@case(TypeError)
def bsr_linear_col_indices_int64():
    bsr_linear(cols=i64(1))


@case(TypeError)
def bsr_linear_row_offsets_int64():
    bsr_linear(row_off=torch.tensor([0, 1, 1]))


@case(TypeError)
def bsr_linear_bias_float64():
    bsr_linear(bias=f64(8))


@case()
def bsr_linear_values_two_dimensional():
    bsr_linear(values=f32(4, 4))


@case()
def bsr_linear_col_indices_two_dimensional():
    bsr_linear(cols=i32(1, 1))


@case()
def bsr_linear_row_offsets_two_dimensional():
    bsr_linear(row_off=torch.tensor([[0, 1, 1]], dtype=torch.int32))


@case()
def bsr_linear_x_zero_dimensional():
    bsr_linear(x=torch.tensor(1.0))


@case()
def bsr_linear_bias_two_dimensional():
    bsr_linear(bias=f32(1, 8))


@case()
def bsr_linear_negative_N():
    bsr_linear(N=-8)


@case()
def bsr_linear_negative_K():
    bsr_linear(K=-8, x=f32(2, 0))


@case()
def bsr_linear_most_negative_N():
    bsr_linear(N=-(2**63))


@case()
def bsr_linear_row_count_overflows():  # ceil(N / 1) + 1 row offsets would wrap
    bsr_linear(values=f32(0, 1, 1), cols=i32(0), row_off=i32(1), N=BIG, K=8)


@case()
def bsr_linear_huge_N_for_the_row_offsets():
    bsr_linear(N=2**62)


@case()
def bsr_linear_huge_K_for_x():
    bsr_linear(K=2**62)


@case(None)
def bsr_linear_huge_K_empty_batch():  # x [0, 2^62]: nothing to compute, nothing allocated
    y = bsr_linear(x=f32(0, 2**62), values=f32(0, 1, 2**62), cols=i32(0), row_off=i32(9), K=2**62)
    assert y.shape == (0, 8)


@case(None)
def bsr_linear_huge_N_empty_batch():  # one block row 2^62 high, no blocks: an empty output
    y = bsr_linear(x=f32(0, 8), values=f32(0, 2**62, 1), cols=i32(0), row_off=i32(2), N=2**62)
    assert y.shape == (0, 2**62)


@case()
def bsr_linear_huge_N_output_overflows():  # no blocks, one block row 2^62 high: the output alone would not fit
    bsr_linear(values=f32(0, 2**62, 1), cols=i32(0), row_off=i32(2), N=2**62)


@case()
def bsr_linear_huge_N_output_past_memory():
    bsr_linear(values=f32(0, 2**45, 1), cols=i32(0), row_off=i32(2), N=2**45)


@case()
def bsr_linear_zero_block_size():
    bsr_linear(values=f32(1, 0, 4))


@case()
def bsr_linear_zero_block_width():
    bsr_linear(values=f32(1, 4, 0))


@case()
def bsr_linear_row_offsets_decrease():
    bsr_linear(row_off=torch.tensor([0, 1, 0], dtype=torch.int32), values=f32(0, 4, 4), cols=i32(0))


@case()
def bsr_linear_row_offsets_do_not_start_at_zero():
    bsr_linear(row_off=torch.tensor([1, 1, 1], dtype=torch.int32))


@case()
def bsr_linear_row_offsets_do_not_end_at_nnz():
    bsr_linear(row_off=torch.tensor([0, 1, 3], dtype=torch.int32))


@case()
def bsr_linear_row_offsets_negative():
    bsr_linear(row_off=torch.tensor([0, -5, 1], dtype=torch.int32))


@case()
def bsr_linear_row_offsets_past_int32_sign():
    bsr_linear(row_off=torch.tensor([0, 2**31 - 1, 1], dtype=torch.int32))


@case()
def bsr_linear_row_offsets_count_mismatch():
    bsr_linear(row_off=torch.tensor([0, 1, 1, 1], dtype=torch.int32))


@case()
def bsr_linear_col_indices_count_mismatch():
    bsr_linear(cols=i32(2))


@case()
def bsr_linear_column_index_out_of_range():
    bsr_linear(cols=torch.tensor([2], dtype=torch.int32))


@case()
def bsr_linear_negative_column_index():
    bsr_linear(cols=torch.tensor([-1], dtype=torch.int32))


@case()
def bsr_linear_column_index_int32_min():
    bsr_linear(cols=torch.tensor([-(2**31)], dtype=torch.int32))


@case()
def bsr_linear_column_index_out_of_range_requires_grad():  # through the autograd kernel
    bsr_linear(x=f32(2, 8).requires_grad_(), cols=torch.tensor([2], dtype=torch.int32))


@case()
def bsr_linear_empty_weight_with_a_huge_block():  # x padded to a 2^40-wide block: bounded, not allocated
    bsr_linear(values=f32(0, 1, 2**40), cols=i32(0), row_off=i32(3), N=2, K=2, x=f32(1, 2))


@case()
def bsr_linear_empty_weight_with_a_huge_block_large_m():  # the panel workspace of a 2^40-high block
    bsr_linear(values=f32(0, 2**40, 1), cols=i32(0), row_off=i32(2), N=2, K=2, x=f32(30, 2))


@case()
def bsr_linear_x_width_mismatch():
    bsr_linear(x=f32(2, 7))


@case()
def bsr_linear_bias_length_mismatch():
    bsr_linear(bias=f32(7))


@case(None)
def bsr_linear_empty_batch_with_a_huge_panel():  # nothing to compute: no workspace is sized
    y = bsr_linear(values=f32(0, 1, 2**40), cols=i32(0), row_off=i32(3), N=2, K=2, x=f32(0, 2))
    assert y.shape == (0, 2)


# ---------------------------------------------------------------- XNOR GEMM


def xnor(a=None, b=None, K=64):
    return ops().xnor_gemm(i64(2, 1) if a is None else a, i64(3, 1) if b is None else b, K)


def random_words(rows, words, seed=0):
    return torch.randint(-(2**63), 2**63 - 1, (rows, words), dtype=torch.int64,
                         generator=torch.Generator().manual_seed(seed))


def xnor_reference(a, b, K):
    from sparsekit.binary.format import unpack_signs

    return (unpack_signs(a, K) @ unpack_signs(b, K).T).round().to(torch.int32)


@case(None, isas=True)
def xnor_gemm_valid():
    for M, N, K in ((5, 7, 64), (3, 17, 200), (33, 9, 1000), (1, 1, 1)):
        W = -(-K // 64)
        a, b = random_words(M, W, 1), random_words(N, W, 2)  # padding bits set: they must be ignored
        equal(ops().xnor_gemm(a, b, K), xnor_reference(a, b, K))


@case(None, isas=True)
def xnor_gemm_non_contiguous_operands():
    a, b = random_words(6, 4, 1), random_words(5, 4, 2)
    want = xnor_reference(a, b, 200)
    equal(ops().xnor_gemm(strided(a, 0), strided(b, 1), 200), want)
    equal(ops().xnor_gemm(a.T.contiguous().T, b, 200), want)


@case(None, isas=True)
def xnor_gemm_rows_of_no_words():  # K = 0: empty dot products, nothing may be read before a row
    equal(xnor(a=i64(2, 0), b=i64(3, 0), K=0), torch.zeros(2, 3, dtype=torch.int32))


@case(None)
def xnor_gemm_empty_operands():
    assert xnor(a=i64(0, 1)).shape == (0, 3)
    assert xnor(b=i64(0, 1)).shape == (2, 0)


@case()
def xnor_gemm_negative_K():
    xnor(K=-1)


@case()
def xnor_gemm_K_overflows_word_count():  # ceil(K / 64) must not be computed as (K + 63) / 64
    xnor(K=BIG)


@case()
def xnor_gemm_K_past_int32_output():
    xnor(a=i64(0, 2**26), b=i64(0, 2**26), K=2**32)


@case()
def xnor_gemm_K_just_past_int32_output():
    W = -(-(2**31) // 64)
    xnor(a=i64(0, W), b=i64(0, W), K=2**31)


@case()
def xnor_gemm_word_count_mismatch():
    xnor(b=i64(3, 2))


@case()
def xnor_gemm_a_word_count_mismatch():
    xnor(a=i64(2, 2))


@case(TypeError)
def xnor_gemm_a_int32():
    xnor(a=i32(2, 1))


@case(TypeError)
def xnor_gemm_b_float32():
    xnor(b=f32(3, 1))


@case(TypeError)
def xnor_gemm_b_uint64():
    xnor(b=torch.zeros(3, 1, dtype=torch.uint64))


@case()
def xnor_gemm_a_one_dimensional():
    xnor(a=i64(1))


@case()
def xnor_gemm_b_three_dimensional():
    xnor(b=i64(3, 1, 1))


# ---------------------------------------------------------------- binary_linear, sign_linear


def binary_linear(x=None, w=None, scale=None, bias=None, K=64, input_scale=True):
    return ops().binary_linear(f32(2, 64) if x is None else x, i64(3, 1) if w is None else w,
                               f32(3) if scale is None else scale, bias, K, input_scale)


def sign_linear(x=None, w=None, scale=None, bias=None, K=64):
    return ops().sign_linear(f32(2, 64) if x is None else x, i64(3, 1) if w is None else w,
                             f32(3) if scale is None else scale, bias, K)


def binary_args(M=5, N=7, K=100, seed=0):
    return randn(M, K, seed=seed), random_words(N, -(-K // 64), seed + 1), randn(N, seed=seed + 2).abs(), \
        randn(N, seed=seed + 3)


@case(None, isas=True)
def binary_linear_valid():
    from sparsekit.binary.reference import binary_linear_reference

    for M, N, K in ((5, 7, 100), (40, 9, 64), (1, 1, 1)):
        x, w, s, b = binary_args(M, N, K)
        for input_scale in (False, True):
            for bias in (None, b):
                close(ops().binary_linear(x, w, s, bias, K, input_scale),
                      binary_linear_reference(x, w, s, bias, K, input_scale))


@case(None, isas=True)
def binary_linear_non_contiguous_inputs():
    from sparsekit.binary.reference import binary_linear_reference

    x, w, s, b = binary_args(6, 5, 130)
    want = binary_linear_reference(x, w, s, b, 130, True)
    close(ops().binary_linear(strided(x), strided(w, 0), strided(s), strided(b), 130, True), want)
    close(ops().binary_linear(x.T.contiguous().T, w.T.contiguous().T, s, b, 130, True), want)


@case(None, isas=True)
def binary_linear_no_in_features():
    from sparsekit.binary.reference import binary_linear_reference

    x, w, s, b = f32(2, 0), i64(3, 0), torch.ones(3), randn(3)
    for input_scale in (False, True):
        close(ops().binary_linear(x, w, s, b, 0, input_scale), binary_linear_reference(x, w, s, b, 0, input_scale))


@case(None)
def binary_linear_empty_products():
    assert binary_linear(x=f32(0, 64)).shape == (0, 3)
    assert binary_linear(w=i64(0, 1), scale=f32(0)).shape == (2, 0)


@case(None, isas=True)
def binary_linear_many_rows_no_columns():  # an empty product: no per-row scratch for 2^40 rows
    assert binary_linear(x=f32(2**40, 0), w=i64(0, 0), scale=f32(0), K=0).shape == (2**40, 0)


@case(None, fallback=True)
def binary_linear_float64_runs_the_reference():
    assert binary_linear(x=f64(2, 64), scale=f64(3)).dtype == torch.float64


@case(TypeError)
def binary_linear_x_int64():
    binary_linear(x=i64(2, 64))


@case(TypeError)
def binary_linear_weight_int32():
    binary_linear(w=i32(3, 2))


@case(TypeError)
def binary_linear_weight_float():
    binary_linear(w=f32(3, 1))


@case(TypeError)
def binary_linear_scale_float64():
    binary_linear(scale=f64(3))


@case(TypeError)
def binary_linear_bias_float64():
    binary_linear(bias=f64(3))


@case()
def binary_linear_weight_one_dimensional():
    binary_linear(w=i64(3))


@case()
def binary_linear_scale_two_dimensional():
    binary_linear(scale=f32(3, 1))


@case()
def binary_linear_scale_length_mismatch():
    binary_linear(scale=f32(2))


@case()
def binary_linear_word_count_mismatch():
    binary_linear(w=i64(3, 2))


@case()
def binary_linear_x_width_mismatch():
    binary_linear(x=f32(2, 63))


@case()
def binary_linear_bias_length_mismatch():
    binary_linear(bias=f32(4))


@case()
def binary_linear_negative_in_features():
    binary_linear(K=-64)


@case()
def binary_linear_huge_in_features():
    binary_linear(K=2**62)


@case()
def binary_linear_largest_in_features():
    binary_linear(K=BIG)


@case()
def binary_linear_x_zero_dimensional():
    binary_linear(x=torch.tensor(1.0))


@case(None, isas=True)
def sign_linear_valid():
    from sparsekit.binary.reference import sign_linear_reference

    for M, N, K in ((5, 7, 100), (40, 9, 64), (1, 1, 1)):
        x, w, s, b = binary_args(M, N, K)
        for bias in (None, b):
            close(ops().sign_linear(x, w, s, bias, K), sign_linear_reference(x, w, s, bias, K))


@case(None, isas=True)
def sign_linear_non_contiguous_inputs():
    from sparsekit.binary.reference import sign_linear_reference

    x, w, s, b = binary_args(6, 5, 130)
    want = sign_linear_reference(x, w, s, b, 130)
    close(ops().sign_linear(strided(x), strided(w, 0), strided(s), strided(b), 130), want)
    close(ops().sign_linear(x.T.contiguous().T, w, s, b, 130), want)


@case(None, isas=True)
def sign_linear_many_rows_no_columns():  # an empty product: no per-row scratch for 2^40 rows
    assert sign_linear(x=f32(2**40, 0), w=i64(0, 0), scale=f32(0), K=0).shape == (2**40, 0)


@case(None, isas=True)
def sign_linear_no_in_features():  # the output is the bias
    b = randn(3)
    equal(sign_linear(x=f32(2, 0), w=i64(3, 0), scale=torch.ones(3), bias=b, K=0), b.expand(2, 3).contiguous())


@case(TypeError)
def sign_linear_x_int32():
    sign_linear(x=i32(2, 64))


@case(TypeError)
def sign_linear_weight_float64():
    sign_linear(w=f64(3, 1))


@case(TypeError)
def sign_linear_scale_int32():
    sign_linear(scale=i32(3))


@case()
def sign_linear_word_count_mismatch():
    sign_linear(w=i64(3, 2))


@case()
def sign_linear_scale_length_mismatch():
    sign_linear(scale=f32(4))


@case()
def sign_linear_x_width_mismatch():
    sign_linear(x=f32(2, 65))


@case()
def sign_linear_negative_in_features():
    sign_linear(K=-1)


@case()
def sign_linear_huge_in_features():
    sign_linear(K=2**62)


@case()
def sign_linear_bias_two_dimensional():
    sign_linear(bias=f32(3, 1))


# ---------------------------------------------------------------- _pack_signs


@case(None, isas=True)
def pack_signs_valid():
    from sparsekit.binary.format import pack_signs

    for R, K in ((3, 64), (5, 100), (17, 1), (2, 1000)):
        x = randn(R, K)
        x[0, 0] = -0.0  # x >= 0: -0.0 is +1
        equal(ops()._pack_signs(x), pack_signs(x))


@case(None, isas=True)
def pack_signs_non_contiguous():
    from sparsekit.binary.format import pack_signs

    x = randn(7, 130)
    equal(ops()._pack_signs(strided(x)), pack_signs(x))
    equal(ops()._pack_signs(x.T.contiguous().T), pack_signs(x))


@case(None)
def pack_signs_empty():
    assert ops()._pack_signs(f32(0, 65)).shape == (0, 2)
    assert ops()._pack_signs(f32(3, 0)).shape == (3, 0)
    assert ops()._pack_signs(f32(0, 2**62)).shape == (0, 2**56)


@case(None)
def pack_signs_many_rows_no_columns():  # an empty output [2^40, 0]
    assert ops()._pack_signs(f32(2**40, 0)).shape == (2**40, 0)


@case(TypeError)
def pack_signs_float64():
    ops()._pack_signs(f64(2, 64))


@case(TypeError)
def pack_signs_int32():
    ops()._pack_signs(i32(2, 64))


@case()
def pack_signs_one_dimensional():
    ops()._pack_signs(f32(64))


@case()
def pack_signs_three_dimensional():
    ops()._pack_signs(f32(1, 2, 64))


# ---------------------------------------------------------------- _conv_im2col


def im2col(x=None, kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), row_words=16):
    return ops()._conv_im2col(f32(1, 3, 4, 4) if x is None else x, list(kernel), list(stride), list(padding),
                              list(dilation), row_words)


def im2col_reference(x, kernel, stride, padding, dilation, row_words):
    from sparsekit.binary.format import im2col_words, pack_signs

    xw = pack_signs(x.permute(0, 2, 3, 1))
    rows, _ = im2col_words(xw, x.shape[1], kernel, stride, padding, dilation)
    return torch.nn.functional.pad(rows, (0, row_words - rows.shape[1]))


IM2COL_GEOMETRIES = [  # (x shape, kernel, stride, padding, dilation)
    ((1, 3, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 70, 5, 6), (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 1, 7, 3), (1, 1), (3, 2), (2, 2), (1, 1)),
]


@case(None, isas=True)
def conv_im2col_valid():
    for shape, k, s, p, d in IM2COL_GEOMETRIES:
        x = randn(*shape)
        words = k[0] * k[1] * -(-shape[1] // 64)
        for row_words in (words, words + 5):
            equal(im2col(x, k, s, p, d, row_words), im2col_reference(x, k, s, p, d, row_words))


@case(None, isas=True)
def conv_im2col_non_contiguous_and_channels_last():
    for shape, k, s, p, d in IM2COL_GEOMETRIES:
        x = randn(*shape)
        words = k[0] * k[1] * -(-shape[1] // 64)
        want = im2col_reference(x, k, s, p, d, words)
        equal(im2col(x.contiguous(memory_format=torch.channels_last), k, s, p, d, words), want)
        equal(im2col(strided(x), k, s, p, d, words), want)
        if shape[1] > 1:
            equal(im2col(strided(x, 1), k, s, p, d, words), want)


@case(None, isas=True)
def conv_im2col_stride_past_the_input():
    out = im2col(x=torch.ones(1, 1, 3, 3), kernel=(1, 1), stride=(BIG, BIG), padding=(0, 0), row_words=1)
    equal(out, torch.ones(1, 1, dtype=torch.int64))


@case(None)
def conv_im2col_empty_batch_with_long_rows():  # an empty output: [0, 2^62]
    assert im2col(x=f32(0, 3, 4, 4), row_words=2**62).shape == (0, 2**62)


@case()
def conv_im2col_huge_row_words():
    im2col(row_words=2**40)


@case()
def conv_im2col_huge_output_from_padding():
    im2col(x=f32(1, 1, 1, 1), kernel=(1, 1), padding=(2**20, 2**20), row_words=8)


@case()
def conv_im2col_row_words_too_short():
    im2col(row_words=8)


@case()
def conv_im2col_negative_row_words():
    im2col(row_words=-1)


@case()
def conv_im2col_dilation_times_kernel_wraps():  # 2^62 * (5 - 1) wraps to 0
    im2col(x=f32(1, 1, 4, 4), kernel=(5, 1), padding=(0, 0), dilation=(2**62, 1), row_words=25)


@case()
def conv_im2col_padding_overflows():
    im2col(padding=(2**62, 0))


@case()
def conv_im2col_largest_padding():
    im2col(padding=(BIG, BIG))


@case()
def conv_im2col_kernel_area_overflows():  # 2^32 x 2^32 taps
    im2col(kernel=(2**32, 2**32), padding=(2**31, 2**31))


@case()
def conv_im2col_output_pixels_overflow():  # an empty batch, but (2^41 + 1)^2 output pixels per image
    im2col(x=f32(0, 1, 1, 1), kernel=(1, 1), padding=(2**40, 2**40), row_words=1)


@case()
def conv_im2col_input_pixels_overflow():  # an empty x whose N * H * W does not fit
    im2col(x=f32(2**31, 0, 2**31, 2**31), kernel=(1, 1), padding=(0, 0), row_words=1)


@case()
def conv_im2col_zero_stride():
    im2col(stride=(0, 1))


@case()
def conv_im2col_negative_stride():
    im2col(stride=(1, -1))


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
def conv_im2col_negative_kernel():
    im2col(kernel=(3, -3))


@case()
def conv_im2col_three_kernel_entries():
    im2col(kernel=(3, 3, 3))


@case()
def conv_im2col_one_stride_entry_list():
    ops()._conv_im2col(f32(1, 3, 4, 4), [3, 3], [1], [1, 1], [1, 1], 16)


@case(PARSER)
def conv_im2col_kernel_past_int64():
    im2col(kernel=(2**64, 3))


@case()
def conv_im2col_no_channels():
    im2col(x=f32(1, 0, 4, 4))


@case()
def conv_im2col_kernel_larger_than_padded_input():
    im2col(kernel=(7, 7))


@case(TypeError)
def conv_im2col_x_float64():
    im2col(x=f64(1, 3, 4, 4))


@case()
def conv_im2col_x_three_dimensional():
    im2col(x=f32(3, 4, 4))


# ---------------------------------------------------------------- binary_conv2d


def binary_conv(x=None, w=None, scale=None, bias=None, C=3, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                dilation=(1, 1)):
    return ops().binary_conv2d(f32(1, 3, 4, 4) if x is None else x, i64(2, 9) if w is None else w,
                               f32(2) if scale is None else scale, bias, C, list(kernel), list(stride), list(padding),
                               list(dilation))


CONV_GEOMETRIES = [  # (x shape, Co, kernel, stride, padding, dilation)
    ((2, 3, 6, 5), 4, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 70, 5, 6), 9, (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 64, 4, 4), 65, (1, 1), (1, 1), (0, 0), (1, 1)),
]


def conv_args(shape, Co, k, seed=0):
    from sparsekit.binary.format import pack_conv_weight

    w = pack_conv_weight(randn(Co, shape[1], *k, seed=seed + 1))
    w[:, -1] |= -(2**62)  # padding bits of the last word set: the op must clear them
    return randn(*shape, seed=seed), w, randn(Co, seed=seed + 2).abs(), randn(Co, seed=seed + 3)


@case(None, isas=True)
def binary_conv2d_valid():
    from sparsekit.binary.reference import binary_conv2d_reference

    for shape, Co, k, s, p, d in CONV_GEOMETRIES:
        x, w, sc, b = conv_args(shape, Co, k)
        for bias in (None, b):
            want = binary_conv2d_reference(x, w, sc, bias, shape[1], k, s, p, d)
            close(binary_conv(x, w, sc, bias, shape[1], k, s, p, d), want)
            close(binary_conv(x.contiguous(memory_format=torch.channels_last), w, sc, bias, shape[1], k, s, p, d),
                  want)
            close(binary_conv(strided(x), strided(w, 0), strided(sc), bias, shape[1], k, s, p, d), want)


@case(None, isas=True)
def binary_conv2d_stride_past_the_input():
    from sparsekit.binary.reference import binary_conv2d_reference

    x, w, sc, b = conv_args((1, 3, 3, 3), 2, (1, 1))
    y = binary_conv(x, w, sc, b, 3, (1, 1), (BIG, BIG), (0, 0))
    close(y, binary_conv2d_reference(x, w, sc, b, 3, (1, 1), (100, 100), (0, 0), (1, 1)))


@case(None)
def binary_conv2d_empty_batch_and_no_outputs():
    assert binary_conv(x=f32(0, 3, 4, 4)).shape == (0, 2, 4, 4)
    assert binary_conv(w=i64(0, 9), scale=f32(0)).shape == (1, 0, 4, 4)


@case(None, fallback=True)
def binary_conv2d_float64_runs_the_reference():
    assert binary_conv(x=f64(1, 3, 4, 4), scale=f64(2)).dtype == torch.float64


@case(TypeError)
def binary_conv2d_x_int32():
    binary_conv(x=i32(1, 3, 4, 4))


@case(TypeError)
def binary_conv2d_weight_float():
    binary_conv(w=f32(2, 9))


@case(TypeError)
def binary_conv2d_scale_float64():
    binary_conv(scale=f64(2))


@case(TypeError)
def binary_conv2d_bias_int64():
    binary_conv(bias=i64(2))


@case()
def binary_conv2d_x_three_dimensional():
    binary_conv(x=f32(3, 4, 4))


@case()
def binary_conv2d_in_channels_mismatch():
    binary_conv(C=4)


@case()
def binary_conv2d_negative_in_channels():
    binary_conv(x=f32(1, 0, 4, 4), C=-1)


@case()
def binary_conv2d_no_channels():
    binary_conv(x=f32(1, 0, 4, 4), C=0, w=i64(2, 0))


@case()
def binary_conv2d_weight_word_mismatch():
    binary_conv(w=i64(2, 8))


@case()
def binary_conv2d_weight_one_dimensional():
    binary_conv(w=i64(18))


@case()
def binary_conv2d_scale_length_mismatch():
    binary_conv(scale=f32(3))


@case()
def binary_conv2d_bias_length_mismatch():
    binary_conv(bias=f32(3))


@case()
def binary_conv2d_zero_kernel():
    binary_conv(kernel=(0, 3), w=i64(2, 0))


@case()
def binary_conv2d_negative_kernel():
    binary_conv(kernel=(-3, -3))


@case()
def binary_conv2d_kernel_area_overflows():
    binary_conv(kernel=(2**32, 2**32), padding=(2**31, 2**31))


@case()
def binary_conv2d_huge_kernel_for_the_weight():  # a valid geometry, but the weight has 9 words, not 2^40
    binary_conv(x=f32(1, 3, 1, 1), kernel=(2**20, 2**20), padding=(2**19, 2**19))


@case()
def binary_conv2d_dilation_times_kernel_wraps():
    binary_conv(dilation=(2**62, 1), padding=(0, 0), kernel=(5, 1), w=i64(2, 5))


@case()
def binary_conv2d_zero_stride():
    binary_conv(stride=(0, 0))


@case()
def binary_conv2d_negative_padding():
    binary_conv(padding=(0, -1))


@case()
def binary_conv2d_padding_overflows():
    binary_conv(padding=(2**62, 2**62))


@case()
def binary_conv2d_negative_dilation():
    binary_conv(dilation=(-1, -1))


@case()
def binary_conv2d_output_pixels_overflow():  # an empty batch, (2^41 + 1)^2 output pixels per image
    binary_conv(x=f32(0, 3, 1, 1), kernel=(1, 1), padding=(2**40, 2**40), w=i64(2, 1))


@case()
def binary_conv2d_three_stride_entries():
    binary_conv(stride=(1, 1, 1))


@case()
def binary_conv2d_kernel_larger_than_padded_input():
    binary_conv(kernel=(7, 7), w=i64(2, 49))


@case(None)
def binary_conv2d_no_outputs_huge_padding():
    assert binary_conv(x=f32(1, 3, 1, 1), kernel=(1, 1), padding=(2**20, 2**20), w=i64(0, 1), scale=f32(0)).shape[1] == 0


@case()
def binary_conv2d_huge_output_from_padding():
    binary_conv(x=f32(1, 3, 1, 1), kernel=(1, 1), padding=(2**20, 2**20), w=i64(2, 1))


# ---------------------------------------------------------------- dwsep_conv2d


def dwsep(x=None, wd=None, bd=None, wp=None, bp=None, stride=(1, 1), padding=(1, 1), dilation=(1, 1), act1=0,
          act2=0, panels=None):
    return ops().dwsep_conv2d(f32(1, 4, 5, 5) if x is None else x, f32(4, 1, 3, 3) if wd is None else wd, bd,
                              f32(6, 4, 1, 1) if wp is None else wp, bp, list(stride), list(padding), list(dilation),
                              act1, act2, panels)


DWSEP_GEOMETRIES = [  # (x shape, Co, kernel, stride, padding, dilation)
    ((2, 4, 6, 5), 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 19, 7, 6), 70, (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 16, 4, 2), 2, (1, 1), (1, 100), (0, 2), (1, 1)),
]


def dwsep_args(shape, Co, k, seed=0):
    C = shape[1]
    return (randn(*shape, seed=seed), randn(C, 1, *k, seed=seed + 1), randn(C, seed=seed + 2),
            randn(Co, C, 1, 1, seed=seed + 3), randn(Co, seed=seed + 4))


@case(None, isas=True)
def dwsep_conv2d_valid():
    from sparsekit.dwsep.reference import dwsep_conv2d_reference

    for shape, Co, k, s, p, d in DWSEP_GEOMETRIES:
        x, wd, bd, wp, bp = dwsep_args(shape, Co, k)
        for act1, act2 in ((0, 0), (1, 2), (3, 1)):
            want = dwsep_conv2d_reference(x, wd, bd, wp, bp, s, p, d, act1, act2)
            close(dwsep(x, wd, bd, wp, bp, s, p, d, act1, act2), want)
            xl = x.contiguous(memory_format=torch.channels_last)
            y = dwsep(xl, wd, bd, wp, bp, s, p, d, act1, act2)
            assert y.is_contiguous(memory_format=torch.channels_last)
            close(y, want)
        close(dwsep(x, wd, None, wp, None, s, p, d), dwsep_conv2d_reference(x, wd, None, wp, None, s, p, d, 0, 0))


@case(None, isas=True)
def dwsep_conv2d_non_contiguous_inputs():
    from sparsekit.dwsep.reference import dwsep_conv2d_reference

    shape, Co, k, s, p, d = DWSEP_GEOMETRIES[1]
    x, wd, bd, wp, bp = dwsep_args(shape, Co, k)
    want = dwsep_conv2d_reference(x, wd, bd, wp, bp, s, p, d, 1, 0)
    close(dwsep(strided(x), strided(wd), strided(bd), strided(wp, 1), strided(bp), s, p, d, 1, 0), want)
    close(dwsep(strided(x, 1), wd, bd, wp, bp, s, p, d, 1, 0), want)
    close(dwsep(x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2), wd, bd, wp, bp, s, p, d, 1, 0), want)


@case(None, isas=True)
def dwsep_conv2d_caller_panels():  # channels_last with the caller's panels, contiguous or not
    from sparsekit.dwsep.cpu import pointwise_panels
    from sparsekit.dwsep.reference import dwsep_conv2d_reference

    shape, Co, k, s, p, d = DWSEP_GEOMETRIES[1]
    x, wd, bd, wp, bp = dwsep_args(shape, Co, k)
    xl = x.contiguous(memory_format=torch.channels_last)
    want = dwsep_conv2d_reference(x, wd, bd, wp, bp, s, p, d, 0, 0)
    panels = pointwise_panels(wp)
    close(dwsep(xl, wd, bd, wp, bp, s, p, d, panels=panels), want)
    close(dwsep(xl, wd, bd, wp, bp, s, p, d, panels=strided(panels, 1)), want)


@case(None, isas=True)
def dwsep_conv2d_more_channels_than_a_tile():  # 16384 / C was 0 and divided by
    C_ = 16385
    wd, wp = torch.ones(C_, 1, 1, 1), torch.ones(1, C_, 1, 1)
    for x in (torch.ones(1, C_, 1, 1), torch.ones(1, C_, 1, 1).contiguous(memory_format=torch.channels_last)):
        out = dwsep(x=x, wd=wd, wp=wp, padding=(0, 0))
        assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == C_


@case(None, isas=True)
def dwsep_conv2d_stride_past_the_input():  # ceil(padding / stride) must not be (padding + stride - 1) / stride
    x = randn(1, 16, 4, 2)  # C = 16 (whole vectors: no per-pixel path), H = 4, W = 2
    wd, bd, wp = randn(16, 1, 1, 1, seed=1), randn(16, seed=2), randn(2, 16, 1, 1, seed=3)
    for xm in (x, x.contiguous(memory_format=torch.channels_last)):
        # one output column, the padding's (the bias alone), with a stride of 2^63 - 1 and of 100
        outs = [dwsep(x=xm, wd=wd, bd=bd, wp=wp, stride=(1, sw), padding=(0, 2)) for sw in (BIG, 100)]
        assert outs[0].shape == (1, 2, 4, 1)
        equal(outs[0], outs[1])


@case(None)
def dwsep_conv2d_empty_batch_and_no_outputs():
    assert dwsep(x=f32(0, 4, 5, 5)).shape == (0, 6, 5, 5)
    assert dwsep(wp=f32(0, 4, 1, 1)).shape == (1, 0, 5, 5)


@case(None)
def dwsep_conv2d_no_outputs_huge_padding():  # (2^21 + 1)^2 output pixels, but no output channels
    assert dwsep(x=f32(1, 4, 1, 1), wd=f32(4, 1, 1, 1), wp=f32(0, 4, 1, 1), padding=(2**20, 2**20)).numel() == 0


@case(None, fallback=True)
def dwsep_conv2d_float64_runs_the_reference():
    assert dwsep(x=f64(1, 4, 5, 5), wd=f64(4, 1, 3, 3), wp=f64(6, 4, 1, 1)).dtype == torch.float64


@case(None)
def dwsep_conv2d_panels_ignored_for_nchw():  # documented: only the channels_last kernel reads them
    assert dwsep(panels=f32(7, 7, 7)).shape == (1, 6, 5, 5)


@case()
def dwsep_conv2d_panels_shape_mismatch():
    dwsep(x=f32(1, 4, 5, 5).contiguous(memory_format=torch.channels_last), panels=f32(2, 4, 64))


@case()
def dwsep_conv2d_panels_two_dimensional():
    dwsep(x=f32(1, 4, 5, 5).contiguous(memory_format=torch.channels_last), panels=f32(4, 64))


@case(TypeError)
def dwsep_conv2d_panels_float64():
    dwsep(x=f32(1, 4, 5, 5).contiguous(memory_format=torch.channels_last), panels=f64(1, 4, 64))


@case(TypeError)
def dwsep_conv2d_x_int32():
    dwsep(x=i32(1, 4, 5, 5))


@case(TypeError)
def dwsep_conv2d_dw_weight_float64():
    dwsep(wd=f64(4, 1, 3, 3))


@case(TypeError)
def dwsep_conv2d_pw_weight_float16():
    dwsep(wp=torch.zeros(6, 4, 1, 1, dtype=torch.float16))


@case(TypeError)
def dwsep_conv2d_bias_float64():
    dwsep(bp=f64(6))


@case()
def dwsep_conv2d_x_three_dimensional():
    dwsep(x=f32(4, 5, 5))


@case()
def dwsep_conv2d_no_channels():
    dwsep(x=f32(1, 0, 5, 5), wd=f32(0, 1, 3, 3), wp=f32(6, 0, 1, 1))


@case()
def dwsep_conv2d_zero_kernel():
    dwsep(wd=f32(4, 1, 0, 3))


@case()
def dwsep_conv2d_depthwise_weight_mismatch():
    dwsep(wd=f32(5, 1, 3, 3))


@case()
def dwsep_conv2d_depthwise_weight_not_per_channel():
    dwsep(wd=f32(4, 2, 3, 3))


@case()
def dwsep_conv2d_depthwise_weight_two_dimensional():
    dwsep(wd=f32(4, 9))


@case()
def dwsep_conv2d_pointwise_weight_mismatch():
    dwsep(wp=f32(6, 5, 1, 1))


@case()
def dwsep_conv2d_pointwise_weight_not_one_by_one():
    dwsep(wp=f32(6, 4, 1, 2))


@case()
def dwsep_conv2d_pointwise_weight_two_dimensional():
    dwsep(wp=f32(6, 4))


@case()
def dwsep_conv2d_bias_length_mismatch():
    dwsep(bd=f32(5))


@case()
def dwsep_conv2d_pointwise_bias_length_mismatch():
    dwsep(bp=f32(5))


@case()
def dwsep_conv2d_kernel_larger_than_padded_input():
    dwsep(wd=f32(4, 1, 9, 9))


@case()
def dwsep_conv2d_dilation_times_kernel_wraps():
    dwsep(wd=f32(4, 1, 5, 1), dilation=(2**62, 1), padding=(0, 0))


@case()
def dwsep_conv2d_padding_overflows():
    dwsep(padding=(2**62, 2**62))


@case()
def dwsep_conv2d_output_pixels_overflow():  # an empty batch, (2^41 + 1)^2 output pixels per image
    dwsep(x=f32(0, 4, 1, 1), wd=f32(4, 1, 1, 1), padding=(2**40, 2**40))


@case()
def dwsep_conv2d_zero_stride():
    dwsep(stride=(1, 0))


@case()
def dwsep_conv2d_negative_stride():
    dwsep(stride=(-1, 1))


@case()
def dwsep_conv2d_negative_padding():
    dwsep(padding=(-1, -1))


@case()
def dwsep_conv2d_negative_dilation():
    dwsep(dilation=(-1, 1))


@case()
def dwsep_conv2d_zero_dilation():
    dwsep(dilation=(0, 0))


@case()
def dwsep_conv2d_three_stride_entries():
    dwsep(stride=(1, 1, 1))


@case(PARSER)
def dwsep_conv2d_stride_past_int64():
    dwsep(stride=(2**64, 1))


@case()
def dwsep_conv2d_bad_activation():
    dwsep(act2=4)


@case()
def dwsep_conv2d_negative_activation():
    dwsep(act1=-1)


@case()
def dwsep_conv2d_huge_activation():
    dwsep(act1=2**62)


@case()
def dwsep_conv2d_huge_output_from_padding():
    dwsep(x=f32(1, 4, 1, 1), wd=f32(4, 1, 1, 1), padding=(2**20, 2**20))


# ---------------------------------------------------------------- codebooks


def codebook(fn, M=2, N=4, K=16, bits=2, group_size=4, x=None, idx=None, cb=None, bias=None):
    """Calls torch.ops.sparsekit.<fn> (codebook_linear or codebook_linear_q8) with valid arguments but those given."""
    field = {1: 1, 2: 2, 3: 4}.get(bits, 4)
    x = f32(M, K) if x is None else x
    idx = i32(N, -(-K // (32 // field))) if idx is None else idx
    cb = f32(1, 2 ** min(max(bits, 1), 4)) if cb is None else cb
    return getattr(ops(), fn)(x, idx, cb, bias, K, bits, group_size)


def bad_3bit_indices(N=4, words=2, row=2, word=1, value=8 << 4):
    """3-bit index words [N, words] holding one field >= 8."""
    idx = i32(N, words)
    idx[row, word] = value
    return idx


def random_codebook(M, N, K, bits, group_size, seed=0):
    from sparsekit.codebook.format import pack_indices

    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 2**bits, (N, K), generator=g)
    groups = -(-N // group_size)
    return (torch.randn(M, K, generator=g), pack_indices(idx, bits), torch.randn(groups, 2**bits, generator=g),
            torch.randn(N, generator=g))


def codebook_cases(fn):
    from sparsekit.codebook import reference

    ref = getattr(reference, f"{fn}_reference")
    tol = 1e-4 if fn == "codebook_linear" else 5e-2

    def add(name, expect=(ValueError, TypeError), isas=False, fallback=False, bug=None, **kw):
        register(f"{fn}_{name}", lambda: codebook(fn, **kw), expect, isas, fallback, bug)

    def valid(bits):
        def run():
            for M, N, K, gs in ((3, 9, 37, 4), (40, 7, 64, 3), (1, 1, 1, 1), (50, 600, 33, 1000)):
                x, idx, cb, b = random_codebook(M, N, K, bits, gs, seed=bits)
                for bias in (None, b):
                    close(getattr(ops(), fn)(x, idx, cb, bias, K, bits, gs), ref(x, idx, cb, bias, K, bits, gs), tol)
        return run

    def non_contiguous():
        for M in (3, 40):  # the lookup kernel and the decoded panels
            x, idx, cb, b = random_codebook(M, 9, 37, 3, 4)
            want = ref(x, idx, cb, b, 37, 3, 4)
            close(getattr(ops(), fn)(strided(x), strided(idx, 0), strided(cb), strided(b), 37, 3, 4), want, tol)
            close(getattr(ops(), fn)(x.T.contiguous().T, idx.T.contiguous().T, cb, b, 37, 3, 4), want, tol)

    def no_in_features():
        b = randn(4)
        equal(codebook(fn, K=0, bias=b), b.expand(2, 4).contiguous())

    def leading_dimensions():
        x, idx, cb, b = random_codebook(6, 9, 37, 2, 4)
        y = getattr(ops(), fn)(x.reshape(2, 3, 37), idx, cb, b, 37, 2, 4)
        assert y.shape == (2, 3, 9)
        close(y.reshape(6, 9), ref(x, idx, cb, b, 37, 2, 4), tol)

    for bits in (1, 2, 3, 4):
        register(f"{fn}_valid_{bits}_bits", valid(bits), None, True)
    register(f"{fn}_non_contiguous_inputs", non_contiguous, None, True)
    register(f"{fn}_no_in_features", no_in_features, None, True)
    register(f"{fn}_leading_dimensions", leading_dimensions, None, True)
    add("huge_group_size", None, True, group_size=BIG)
    add("huge_group_size_with_an_empty_codebook", group_size=BIG, cb=f32(0, 4))  # ceil(4 / BIG) came out as 0
    add("no_rows_and_an_empty_codebook", None, True, N=0, cb=f32(0, 4))
    add("empty_batch", None, M=0)
    add("float64_runs_the_reference", None, fallback=True, x=f64(2, 16), cb=f64(1, 4))
    add("zero_group_size", group_size=0)
    add("negative_group_size", group_size=-4)
    add("zero_bits", bits=0)
    add("five_bits", bits=5)
    add("negative_bits", bits=-1)
    add("bits_of_64", bits=64, cb=f32(1, 16))
    add("largest_bits", bits=BIG, cb=f32(1, 16))
    add("negative_in_features", K=-16, x=f32(2, 0), idx=i32(4, 0))
    # in_features past what the kernels address (no rows, no batch: nothing allocated)
    add("too_many_index_words", M=0, N=0, K=2**40, cb=f32(0, 4))
    add("in_features_of_2_62", M=0, N=0, K=2**62, cb=f32(0, 4))
    add("largest_in_features", M=0, N=0, K=BIG, idx=i32(0, BIG // 16 + 1), cb=f32(0, 4))
    add("x_width_mismatch", x=f32(2, 15))
    add("x_zero_dimensional", x=torch.tensor(1.0))
    add("index_width_mismatch", idx=i32(4, 2))
    add("indices_one_dimensional", idx=i32(4))
    add("codebook_width_mismatch", cb=f32(1, 8))
    add("codebook_group_count_mismatch", cb=f32(2, 4))
    add("codebook_one_dimensional", cb=f32(4))
    add("bias_length_mismatch", bias=f32(3))
    add("bias_two_dimensional", bias=f32(4, 1))
    add("int64_indices", TypeError, idx=i64(4, 1))
    add("uint8_indices", TypeError, idx=torch.zeros(4, 1, dtype=torch.uint8))
    add("float64_codebook", TypeError, cb=f64(1, 4))
    add("int_x", TypeError, x=i32(2, 16))
    add("float64_bias", TypeError, bias=f64(4))
    add("three_bit_index_of_eight", isas=True, bits=3, idx=bad_3bit_indices())
    add("three_bit_index_of_fifteen_many_rows", isas=True, M=20, N=40, bits=3, group_size=40,
        idx=bad_3bit_indices(N=40, row=39, word=0, value=0xF))
    add("three_bit_index_of_eight_decoded_panels", isas=True, M=40, bits=3, idx=bad_3bit_indices())
    add("three_bit_index_of_eight_empty_batch", M=0, bits=3, idx=bad_3bit_indices())  # no kernel runs
    add("three_bit_padding_field_set", isas=True, K=12, bits=3,  # K = 12 of 16 fields: the unused ones must be 0
        idx=bad_3bit_indices(row=0, word=1, value=-(2**31)))
    add("three_bit_index_of_eight_requires_grad", x=f32(2, 16).requires_grad_(), bits=3, idx=bad_3bit_indices())


codebook_cases("codebook_linear")
codebook_cases("codebook_linear_q8")


def decode(idx=None, cb=None, K=16, bits=2, group_size=4, row0=0):
    return ops()._codebook_decode(i32(2, 1) if idx is None else idx, f32(1, 4) if cb is None else cb, K, bits,
                                  group_size, row0)


@case(None, isas=True)
def codebook_decode_valid():
    from sparsekit.codebook.format import codebook_dense

    for bits in (1, 2, 3, 4):
        _, idx, cb, _ = random_codebook(1, 11, 37, bits, 3, seed=bits)
        dense = codebook_dense(idx, cb, bits, 37, 3)
        equal(decode(idx, cb, 37, bits, 3), dense)
        equal(decode(idx[4:9], cb, 37, bits, 3, row0=4), dense[4:9])
        equal(decode(strided(idx[4:9], 0), strided(cb), 37, bits, 3, row0=4), dense[4:9])


@case(None)
def codebook_decode_empty():
    assert decode(idx=i32(0, 1)).shape == (0, 16)
    assert decode(idx=i32(0, 1), row0=BIG).shape == (0, 16)
    assert decode(idx=i32(0, 2**58), K=2**62, cb=f32(0, 4)).shape == (0, 2**62)
    assert decode(idx=i32(2, 0), K=0).shape == (2, 0)


@case(None)
def codebook_decode_many_rows_no_columns():  # an empty output [2^33, 0]
    assert decode(idx=i32(2**33, 0), K=0, group_size=2**40).shape == (2**33, 0)


@case(None)
def codebook_decode_huge_group_size():
    assert decode(group_size=BIG, row0=2**40).shape == (2, 16)


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
def codebook_decode_negative_group_size():
    decode(group_size=-BIG)


@case()
def codebook_decode_bits_out_of_range():
    decode(bits=7)


@case()
def codebook_decode_zero_bits():
    decode(bits=0)


@case()
def codebook_decode_negative_in_features():
    decode(K=-16)


@case()
def codebook_decode_huge_in_features():
    decode(K=2**62)


@case()
def codebook_decode_index_width_mismatch():
    decode(idx=i32(2, 2))


@case()
def codebook_decode_indices_one_dimensional():
    decode(idx=i32(2))


@case()
def codebook_decode_empty_codebook():
    decode(cb=f32(0, 4))


@case()
def codebook_decode_codebook_width_mismatch():
    decode(cb=f32(1, 8))


@case(TypeError)
def codebook_decode_codebook_float64():
    decode(cb=f64(1, 4))


@case(TypeError)
def codebook_decode_indices_int64():
    decode(idx=i64(2, 1))


@case(isas=True)
def codebook_decode_three_bit_index_of_nine():
    idx = i32(2, 2)
    idx[1, 1] = 9 << 12
    decode(idx=idx, cb=f32(1, 8), bits=3)


@case(isas=True)
def codebook_decode_three_bit_padding_field_set():  # K = 12 of 16 fields: the unused ones must be 0
    idx = i32(2, 2)
    idx[0, 1] = -(2**31)  # the last field's high bit
    decode(idx=idx, cb=f32(1, 8), bits=3, K=12)


# ---------------------------------------------------------------- Huffman coding


def lengths(*ls):
    return torch.tensor(ls, dtype=torch.uint8)


def huffman_decode(data, lens, n):
    return ops()._huffman_decode(torch.tensor(list(data), dtype=torch.uint8), lens, n)


@case(None)
def huffman_round_trip():
    lens = lengths(1, 2, 3, 3)
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 4, 1000):
        symbols = torch.randint(0, 4, (n,), generator=g, dtype=torch.int32)
        data = ops()._huffman_encode(symbols, lens)
        assert data.dtype == torch.uint8 and data.dim() == 1
        equal(ops()._huffman_decode(data, lens, n), symbols)
        equal(ops()._huffman_decode(strided(data), strided(lens), n), symbols)
    equal(ops()._huffman_encode(strided(torch.tensor([0, 1, 2, 2], dtype=torch.int32)), lens),
          ops()._huffman_encode(torch.tensor([0, 1, 2, 2], dtype=torch.int32), lens))


@case(None)
def huffman_empty_alphabet_and_stream():
    assert ops()._huffman_encode(i32(0), lengths()).shape == (0,)
    assert ops()._huffman_decode(torch.zeros(0, dtype=torch.uint8), lengths(), 0).shape == (0,)


@case(None)
def huffman_longest_codes():  # lengths of 32 bits (a complete code: 1, 2, ..., 31, 32, 32)
    lens = torch.tensor(list(range(1, 33)) + [32], dtype=torch.uint8)
    symbols = torch.tensor([31, 32, 0, 30], dtype=torch.int32)
    data = ops()._huffman_encode(symbols, lens)
    equal(ops()._huffman_decode(data, lens, 4), symbols)


@case()
def huffman_encode_symbol_out_of_range():
    ops()._huffman_encode(torch.tensor([3], dtype=torch.int32), lengths(1, 1))


@case()
def huffman_encode_negative_symbol():
    ops()._huffman_encode(torch.tensor([-1], dtype=torch.int32), lengths(1, 1))


@case()
def huffman_encode_int32_min_symbol():
    ops()._huffman_encode(torch.tensor([-(2**31)], dtype=torch.int32), lengths(1, 1))


@case()
def huffman_encode_symbol_without_code():
    ops()._huffman_encode(torch.tensor([1], dtype=torch.int32), lengths(1, 0))


@case()
def huffman_encode_code_longer_than_32():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), lengths(33, 1))


@case()
def huffman_encode_code_of_255_bits():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), lengths(255, 255))


@case()
def huffman_encode_over_subscribed_lengths():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), lengths(1, 1, 1))


@case()
def huffman_encode_over_subscribed_at_two_bits():  # five 2-bit codes: a Kraft sum of 5/4
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), torch.full((5,), 2, dtype=torch.uint8))


@case()
def huffman_decode_over_subscribed_at_32_bits():  # a complete code of 1..32 bits plus one more 32-bit code
    ops()._huffman_decode(u8(0), torch.tensor(list(range(1, 33)) + [32, 32], dtype=torch.uint8), 1)


@case(TypeError)
def huffman_encode_lengths_not_uint8():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), torch.tensor([1, 1], dtype=torch.int32))


@case(TypeError)
def huffman_encode_lengths_int8():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), torch.tensor([1, 1], dtype=torch.int8))


@case(TypeError)
def huffman_encode_symbols_int64():
    ops()._huffman_encode(torch.tensor([0]), lengths(1, 1))


@case()
def huffman_encode_lengths_two_dimensional():
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), torch.ones(1, 2, dtype=torch.uint8))


@case()
def huffman_encode_symbols_two_dimensional():
    ops()._huffman_encode(torch.zeros(1, 1, dtype=torch.int32), lengths(1, 1))


@case()
def huffman_encode_alphabet_past_2_31():  # a broadcast view: 2^31 + 1 lengths in one byte of memory
    ops()._huffman_encode(torch.tensor([0], dtype=torch.int32), lengths(1).expand(2**31 + 1))


@case()
def huffman_decode_alphabet_past_2_31():
    ops()._huffman_decode(u8(0), lengths(1).expand(2**31 + 1), 1)


@case()
def huffman_decode_truncated_stream():
    huffman_decode(b"", lengths(1, 1), 1)


@case()
def huffman_decode_huge_n_tiny_data():
    huffman_decode(b"\x00", lengths(1, 1), 2**62)


@case()
def huffman_decode_largest_n():
    huffman_decode(b"\x00", lengths(1, 1), BIG)


@case()
def huffman_decode_n_one_past_the_bits():  # n = 8 * bytes + 1: allocated (bounded by the data), then rejected
    huffman_decode(b"\x00" * 4, lengths(1, 1), 33)


@case()
def huffman_decode_n_seven_past_the_bits():
    huffman_decode(b"\x00" * 4, lengths(1, 1), 39)


@case()
def huffman_decode_negative_n():
    huffman_decode(b"\x00", lengths(1, 1), -1)


@case()
def huffman_decode_most_negative_n():
    huffman_decode(b"\x00", lengths(1, 1), -(2**63))


@case()
def huffman_decode_invalid_code():
    huffman_decode(b"\xff\xff\xff\xff\xff", lengths(1, 0, 0), 1)


@case()
def huffman_decode_over_subscribed_lengths():
    huffman_decode(b"\x00", lengths(1, 1, 1), 1)


@case()
def huffman_decode_code_longer_than_32():
    huffman_decode(b"\x00", lengths(40, 1), 1)


@case()
def huffman_decode_no_codes():
    huffman_decode(b"\x00", lengths(0, 0), 1)


@case()
def huffman_decode_bytes_left_over():
    huffman_decode(b"\x00\x00", lengths(1, 1), 1)


@case()
def huffman_decode_nonzero_padding():
    huffman_decode(b"\x01", lengths(1, 1), 1)


@case(TypeError)
def huffman_decode_data_int8():
    ops()._huffman_decode(torch.zeros(1, dtype=torch.int8), lengths(1, 1), 1)


@case(TypeError)
def huffman_decode_lengths_int64():
    ops()._huffman_decode(u8(0), torch.tensor([1, 1]), 1)


@case()
def huffman_decode_data_two_dimensional():
    ops()._huffman_decode(torch.zeros(1, 1, dtype=torch.uint8), lengths(1, 1), 1)


@case(PARSER)
def huffman_decode_data_not_a_tensor():
    ops()._huffman_decode(b"\x00", lengths(1, 1), 1)


@case(PARSER)
def huffman_decode_n_past_int64():
    huffman_decode(b"\x00", lengths(1, 1), 2**64)


# ---------------------------------------------------------------- the child


_FALLBACK_CALLS = []  # an entry per call that reached an op's Python fallback


def _count_fallback_calls():
    """Records every call of a KernelTable's Python kernels (its check runs first on each)."""
    import sparsekit.binary.op
    import sparsekit.block_sparse.op
    import sparsekit.codebook.op
    import sparsekit.dwsep.op
    from sparsekit.backend import KernelTable

    tables = {id(t): t for m in (sparsekit.binary.op, sparsekit.block_sparse.op, sparsekit.codebook.op,
                                 sparsekit.dwsep.op) for t in vars(m).values() if isinstance(t, KernelTable)}
    assert len(tables) == 8, sorted(t.name for t in tables.values())
    for t in tables.values():
        def check(*args, _check=t.check, _name=t.name):
            _FALLBACK_CALLS.append(_name)
            return _check(*args)

        t.check = check


def _limit_address_space():
    """Caps the address space a little above what the process uses now: an allocation the
    arguments made huge then fails at once instead of succeeding lazily (and being written)."""
    import resource

    if not sys.platform.startswith("linux"):
        return
    # warm-up: PyTorch's thread pool and allocator, every kernel family once
    torch.ones(1 << 20).sum()
    ops()._pack_signs(torch.ones(256, 256))
    bsr_linear(x=torch.ones(100, 8))
    vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = vm + AS_MARGIN
    if hard == resource.RLIM_INFINITY or want <= hard:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def _run(names):
    import sparsekit

    print(f"#native\t{_ext.native().__file__}", flush=True)
    sparsekit.set_backend("auto")
    best = ops()._cpu_isa()
    _count_fallback_calls()
    _limit_address_space()
    for name in names:
        fn, expect, isa, fallback, _ = CASES[name]
        before = len(_FALLBACK_CALLS)
        try:
            ops()._set_cpu_isa(isa or best)
            signal.alarm(CASE_S)  # the default action ends the process, even inside a kernel
            try:
                fn()
            finally:
                signal.alarm(0)
        except Exception as e:  # noqa: BLE001 (reported, then judged by the parent)
            ok = expect is not None and isinstance(e, expect)
            status = "ok" if ok else "wrong"
            detail = f"{type(e).__name__}: {e}"
        else:
            status = "ok" if expect is None else "wrong"
            detail = "returned"
        if not fallback and len(_FALLBACK_CALLS) > before:
            status = "wrong"
            detail = f"ran the Python fallback of {sorted(set(_FALLBACK_CALLS[before:]))}, not the native kernel; {detail}"
        print(f"{name}\t{status}\t{detail[:2000]}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    _run(sys.argv[1:])


# ---------------------------------------------------------------- the tests


def _child(names):
    """Runs the named cases in a child process: (its stdout lines, its exit status or 'hung', stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_BACKEND"}  # the default backend, "auto"
    cmd = [sys.executable, os.path.abspath(__file__), *names]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S * 2, env=env)
        return proc.stdout.splitlines(), proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or ""
        return out.splitlines(), "hung", err


@pytest.fixture(scope="module")
def results():
    """{case: (status, detail)} from as few child processes as crashes require."""
    out, pending = {}, list(CASES)
    while pending:
        lines, rc, stderr = _child(pending)
        assert lines and lines[0].startswith("#native\t"), f"the child did not start:\n{stderr[-4000:]}"
        native = lines[0].split("\t", 1)[1]
        assert os.path.samefile(native, _ext.native().__file__), f"the child loaded another extension: {native}"
        for line in lines[1:]:
            name, status, detail = line.split("\t", 2)
            out[name] = (status, detail)
        pending = [n for n in pending if n not in out]
        if pending:  # the child died (or hung) running pending[0]
            why = f"hung (killed after {CASE_S} s)" if rc in (-signal.SIGALRM, "hung") else f"exit status {rc}"
            out[pending[0]] = ("crashed", f"{why}:\n{stderr[-4000:]}")
            pending = pending[1:]
    return out


def _params():
    for name, (_, _, _, _, bug) in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_native_op(results, name):
    status, detail = results[name]
    expect = CASES[name][1]
    wanted = "returns" if expect is None else f"raises {getattr(expect, '__name__', expect)}"
    assert status == "ok", f"{name} must {wanted}; it {status}: {detail}"


def test_every_op_is_covered():
    """Every op with a native CPU kernel (and every native-only op) has a case."""
    names = {n.split("[")[0] for n in CASES}
    native_ops = ["bsr_linear", "xnor_gemm", "binary_linear", "sign_linear", "binary_conv2d", "codebook_linear",
                  "codebook_linear_q8", "dwsep_conv2d", "_pack_signs", "_conv_im2col", "_codebook_decode",
                  "_huffman_encode", "_huffman_decode", "_set_cpu_isa", "_set_cpu_backend"]
    for op in native_ops:
        assert hasattr(torch.ops.sparsekit, op), f"torch.ops.sparsekit.{op} is not registered"
        stem = op.lstrip("_")
        assert any(n.startswith(stem) for n in names), f"no hostile-argument case calls torch.ops.sparsekit.{op}"
    # the ops of the library that run C++ on the CPU: a new one needs its cases here
    import sparsekit  # noqa: F401 (defines the Python side of the library)

    registered = {op.split("::")[1] for op in torch._C._dispatch_get_all_op_names() if op.startswith("sparsekit::")}
    native = {op for op in registered
              if torch._C._dispatch_has_kernel_for_dispatch_key(f"sparsekit::{op}", "CPU")
              and not op.startswith("_") and not op.endswith("_fallback")}
    assert native <= set(native_ops), f"native ops without hostile-argument cases: {sorted(native - set(native_ops))}"
