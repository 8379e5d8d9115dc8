"""Property-based tests (hypothesis, issue 13): every op's native CPU kernel, on every instruction set
this machine supports (``sparsekit._ext.supported_isas()``), against the op's plain-PyTorch reference.

What is drawn
* Shapes, with the awkward ones favoured: M = 0 and 1, both sides of each kernel's path
  thresholds (block-sparse SMALL_M, codebook DENSE_FROM_M, the 64-row panels), sizes that are not
  multiples of a block or a vector, sizes smaller than a vector, 1 x k and k x 1 blocks, blocks
  that do not divide the shape, channel counts 1/3/17/65, tiny and odd images, stride, padding,
  dilation; transposed, sliced (the skipped memory holds NaN) and 3-D inputs; 1 or 2 threads.
* Values (:class:`Values`): normal, small-integer (exact ties, signed zeros), wide-range
  (1e-12 .. 1e12) or tiny data, with NaN, +-Inf, +-0, huge (1e30, 3e38) and subnormal values
  mixed in, at drawn positions (hypothesis shrinks them to the fewest that still fail) and
  sprinkled at a drawn density. The falsifying example hypothesis prints rebuilds the tensors:
  ``Values(...).build()``.

What must hold
* The output's shape and dtype (and memory format where the op promises one).
* The NaN/Inf pattern equals the reference's exactly: the same positions NaN, the same +Inf and
  -Inf. The rule (the reference is its definition): IEEE propagation of ``x @ W.T + b`` with the
  dense (decoded/masked) weight for the linear ops, so a non-finite input also meets the zeros of
  absent blocks (0 * Inf = NaN); as PyTorch's convolutions for dwsep; for the int8 codebook option
  a row with any non-finite input is all NaN (``codebook_linear_q8_reference`` quantizes such a row
  to zeros with a NaN/Inf scale: 0 * NaN = 0 * Inf = NaN; a group with a non-finite centroid
  likewise makes its output columns NaN).
* Where both are finite: |kernel - reference| <= a forward-error bound of float32 arithmetic at
  the output's own scale, ``c * eps * sum |terms|`` (c grows with the length of the sums), so huge
  and tiny data are compared at their own magnitude; plus (terms + 1) * FLT_MIN, so that a
  subnormal partial result flushed to zero passes while a subnormal *input* read as zero (times
  a huge weight) does not.
* Not compared: outputs where the float32 sum of the finite terms could overflow at all (sum of
  |finite terms| > LIMIT = 1e37, FLT_MAX / 34): there the order of the additions decides between
  a finite value, +-Inf and NaN (3e38 + 3e38 - 3e38), and each is a correct float32 evaluation.
  A NaN no order avoids (a NaN term, Inf * 0, +Inf and -Inf terms) is compared there too.

Failures name the op, the case, the backend and ISA and the first differing position; a NaN/Inf
pattern failure, a value failure and a reference that breaks the rule are raised from different
lines, so hypothesis shrinks and reports each as its own bug.

Profiles: tests/conftest.py ("ci", the default; "full": SPARSEKIT_HYPOTHESIS_PROFILE=full or
``--hypothesis-profile=full``, ``make test-properties-full``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import sparsekit
from sparsekit import _ext
from sparsekit._conv import is_channels_last
from sparsekit.binary.format import pack_conv_weight, pack_signs, packed_words, unpack_signs
from sparsekit.binary.reference import (
    binary_conv2d_reference,
    binary_linear_reference,
    sign_linear_reference,
    xnor_gemm_reference,
)
from sparsekit.block_sparse import BSRWeight
from sparsekit.block_sparse.format import bsr_to_dense
from sparsekit.block_sparse.reference import bsr_linear_reference
from sparsekit.codebook.format import codebook_dense, num_groups, pack_indices, unpack_indices
from sparsekit.codebook.reference import (
    codebook_linear_q8_reference,
    codebook_linear_reference,
    quantize_codebook_q8,
    quantize_rows_q8,
)
from sparsekit.dwsep.reference import ACTIVATIONS, dwsep_conv2d_reference

ops = torch.ops.sparsekit

EPS = torch.finfo(torch.float32).eps
FLT_MIN = torch.finfo(torch.float32).tiny  # smallest normal float32
LIMIT = 1e37  # sum |finite terms| above this: float32 partial sums may overflow (not compared)

# the kernels' path thresholds (read where they still exist, so the file survives their removal)
# the native kernels' path thresholds (csrc/block_sparse/register.cpp kSmallM, csrc/codebook/register.cpp
# dense_from_m and kPanelRows): the shapes drawn straddle them
BSR_SMALL_M = 24
BSR_DENSE_MIN_M = 48
BSR_PANEL = 64  # csrc/kernel_args.h kBsrPanel: activation rows per packed panel (large-M path)
CB_DENSE_FROM_M = {1: 96, 2: 32, 3: 16, 4: 16}
CB_PANEL_ROWS = 512

NAN, INF = math.nan, math.inf
SPECIALS = (NAN, INF, -INF, 0.0, -0.0, 1e30, -1e30, 3e38, -3e38, 1e-45, -1e-45, 1e-39, -3e-39, FLT_MIN, 1e-30)
BASES = ("normal", "ints", "wide", "tiny")


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Values:
    """How a float32 tensor is made; its repr (printed in a falsifying example) rebuilds it."""

    shape: tuple
    seed: int
    base: str  # normal: randn; ints: -3..3; wide: randn * 10^U(-12, 12); tiny: randn * 1e-17
    density: float = 0.0  # fraction of positions replaced by seeded random SPECIALS
    picks: tuple = ()  # ((flat index, value), ...): set last
    positive: bool = False  # |base| (the specials keep their sign)

    def build(self) -> torch.Tensor:
        n = math.prod(self.shape)
        g = torch.Generator().manual_seed(self.seed)
        if self.base == "ints":
            t = torch.randint(-3, 4, (n,), generator=g).float()
        elif self.base == "wide":
            t = torch.randn(n, generator=g) * torch.pow(10.0, torch.empty(n).uniform_(-12, 12, generator=g))
        elif self.base == "tiny":
            t = torch.randn(n, generator=g) * 1e-17
        else:
            t = torch.randn(n, generator=g)
        if self.positive:
            t = t.abs()
        if self.density and n:
            hit = torch.rand(n, generator=g) < self.density
            pool = torch.tensor(SPECIALS, dtype=torch.float32)
            t = torch.where(hit, pool[torch.randint(len(SPECIALS), (n,), generator=g)], t)
        for i, v in self.picks:
            t[i] = v
        return t.reshape(self.shape)


def values(shape, specials: bool = True, positive: bool = False) -> st.SearchStrategy[Values]:
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    if specials and n:
        picks = st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(SPECIALS)), max_size=4).map(tuple)
        density = st.sampled_from((0.0, 0.0, 0.02, 0.25))
    else:
        picks, density = st.just(()), st.just(0.0)
    return st.builds(Values, st.just(shape), st.integers(0, 2**32 - 1), st.sampled_from(BASES), density, picks,
                     st.just(positive))


def sizes(lo: int, hi: int, favoured=()) -> st.SearchStrategy[int]:
    """An int in [lo, hi], the favoured (edge) values drawn often."""
    fav = sorted({v for v in favoured if lo <= v <= hi})
    return st.one_of(st.sampled_from(fav), st.integers(lo, hi)) if fav else st.integers(lo, hi)


def around(*thresholds) -> list:
    return [t + d for t in thresholds for d in (-1, 0, 1)]


LAYOUTS = ("contiguous", "transposed", "sliced", "3d", "3d_strided")


def lay_out(x2: torch.Tensor, layout: str) -> torch.Tensor:
    """The [M, K] values of ``x2`` as an input of the given layout (same rows, row-major order)."""
    M, K = x2.shape
    if layout == "transposed":
        return x2.t().contiguous().t()
    if layout == "sliced":  # every other column of a wider buffer whose skipped columns are NaN
        buf = torch.full((M, 2 * K), NAN)
        buf[:, ::2] = x2
        return buf[:, ::2]
    if layout in ("3d", "3d_strided"):
        b = next(d for d in (3, 2, 1) if M % d == 0)
        x3 = x2.reshape(b, M // b, K)
        return x3 if layout == "3d" else x3.transpose(0, 1).contiguous().transpose(0, 1)
    return x2


@contextlib.contextmanager
def num_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fin(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """|t| in float64 with the non-finite entries zeroed (the magnitudes float32 sums can reach)."""
    if t is None:
        return None
    t = t.detach().double()
    return torch.where(t.isfinite(), t, torch.zeros_like(t)).abs()


def d64(t):
    return None if t is None else t.detach().double()


def rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` [..., n] as [rows, n] (explicit sizes: also when a dimension is 0)."""
    return t.detach().reshape(math.prod(t.shape[:-1]), n)


# ---------------------------------------------------------------- running and comparing


def run_every_isa(call: Callable[[], torch.Tensor]) -> dict:
    """``call()`` with the cpu backend forced, once per instruction set of this machine."""
    isas = _ext.supported_isas()  # NativeExtensionError without the extension: never a silent pass
    assert isas, "no CPU instruction set reported"
    outs = {}
    for isa in isas:
        with sparsekit.use_backend("cpu"), _ext.use_cpu_isa(isa):
            try:
                outs[isa] = call()
            except Exception as exc:
                exc.add_note(f"raised by the cpu backend with ISA {isa}")
                raise
    return outs


@dataclass
class Expected:
    ref: torch.Tensor  # the reference's output (float64, or float32 where its own dtype matters)
    tol: torch.Tensor  # allowed |kernel - reference| where both are finite (broadcasts to ref)
    ambiguous: torch.Tensor  # bool (broadcasts): float32 overflow of finite terms possible, not compared
    rule_nan: Optional[torch.Tensor] = None  # bool: where the documented rule makes the output NaN
    rule_posinf: Optional[torch.Tensor] = None
    rule_neginf: Optional[torch.Tensor] = None


def _fmt_idx(flat: int, shape) -> tuple:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape)))


def _first(mask: torch.Tensor, y: torch.Tensor, r: torch.Tensor, tol: Optional[torch.Tensor] = None) -> str:
    flat = mask.reshape(-1).nonzero()[0, 0].item()
    at = _fmt_idx(flat, mask.shape)
    s = f"first at {at}: kernel {y.reshape(-1)[flat].item()!r}, reference {r.reshape(-1)[flat].item()!r}"
    if tol is not None:
        s += f", |diff| {abs(y.reshape(-1)[flat].item() - r.reshape(-1)[flat].item()):.3g} > tol " \
             f"{tol.reshape(-1)[flat].item():.3g}"
    return s


def assert_matches(op: str, case: dict, outs: dict, exp: Expected, memory_format=None) -> None:
    """Every ISA's output against the reference (module docstring). Raises AssertionError naming
    the op, the case, the backend/ISA and the first differing position."""
    r = exp.ref.double()
    shape = r.shape
    amb = exp.ambiguous.expand(shape)
    det = ~amb
    tol = exp.tol.double().expand(shape)
    tol = torch.where(tol.isnan(), torch.zeros_like(tol), tol)  # a NaN tolerance must not pass anything
    casestr = ", ".join(f"{k}={v}" for k, v in case.items())
    head = f"{op} (case: {casestr}; {int(det.sum())} of {r.numel()} outputs compared)"

    # the reference against the documented rule (only where the rule is stated per output)
    if exp.rule_nan is not None:
        rule_bad = det & (r.isnan() != exp.rule_nan.expand(shape))
        for m, want in ((exp.rule_posinf, INF), (exp.rule_neginf, -INF)):
            if m is not None:
                rule_bad |= det & ~exp.rule_nan.expand(shape) & ((r == want) != m.expand(shape))
        if bool(rule_bad.any()):
            flat = rule_bad.reshape(-1).nonzero()[0, 0].item()
            raise AssertionError(
                f"the REFERENCE breaks the documented NaN/Inf rule: {head}: {int(rule_bad.sum())} outputs, first at "
                f"{_fmt_idx(flat, shape)}: reference {r.reshape(-1)[flat].item()!r}, rule says "
                f"{'nan' if exp.rule_nan.expand(shape).reshape(-1)[flat] else 'not nan'}")

    meta, pattern, value = [], [], []
    for isa, y in outs.items():
        where = f"backend cpu, ISA {isa}"
        if tuple(y.shape) != tuple(shape) or y.dtype != torch.float32:
            meta.append(f"  [{where}] output {y.dtype} {list(y.shape)}, expected float32 {list(shape)}")
            continue
        if memory_format is not None and y.numel() and not y.is_contiguous(memory_format=memory_format):
            meta.append(f"  [{where}] output is not {memory_format} (strides {y.stride()})")
        yd = y.detach().double()
        yn, rn = yd.isnan(), r.isnan()
        bad_nan = det & (yn != rn)
        bad_inf = det & ~yn & ~rn & (yd.isinf() | r.isinf()) & (yd != r)
        bad_pat = bad_nan | bad_inf
        if bool(bad_pat.any()):
            pattern.append(f"  [{where}] NaN/Inf pattern differs at {int(bad_pat.sum())} outputs "
                           f"({int(bad_nan.sum())} NaN, {int(bad_inf.sum())} Inf): {_first(bad_pat, yd, r)}")
        both = det & yd.isfinite() & r.isfinite()
        bad_val = both & ((yd - r).abs() > tol)
        if bool(bad_val.any()):
            value.append(f"  [{where}] {int(bad_val.sum())} finite outputs out of tolerance: "
                         f"{_first(bad_val, yd, r, tol)}")
    report = "\n".join(meta + pattern + value)
    if meta:
        raise AssertionError(f"{head}: wrong output shape/dtype/layout\n{report}")
    if pattern:
        raise AssertionError(f"{head}: NaN/Inf pattern differs from the reference\n{report}")
    if value:
        raise AssertionError(f"{head}: values differ from the reference\n{report}")


# ---------------------------------------------------------------- oracles


def linear_rule(x2: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]):
    """IEEE y = x2 @ w.T + b, per output, independent of the summation order: (nan, +inf, -inf,
    bound). nan: a NaN term, Inf * 0, or +Inf and -Inf terms (NaN in every order); +-inf: Inf
    terms of one sign; bound: sum |finite terms| (no partial sum of them overflows below LIMIT)."""
    x2, w = x2.double(), w.double()
    M, K, N = x2.shape[0], x2.shape[1], w.shape[0]

    def mm(a, c):
        return a.double() @ c.double().T

    ox, ow = torch.ones(M, K, dtype=torch.bool), torch.ones(N, K, dtype=torch.bool)
    xinf, winf = x2.isinf(), w.isinf()
    nan_terms = mm(x2.isnan(), ow) + mm(ox, w.isnan()) + mm(xinf, w == 0) + mm(x2 == 0, winf)
    pos = mm(x2 == INF, w > 0) + mm(x2 == -INF, w < 0) + mm(x2 > 0, w == INF) + mm(x2 < 0, w == -INF)
    neg = mm(x2 == INF, w < 0) + mm(x2 == -INF, w > 0) + mm(x2 > 0, w == -INF) + mm(x2 < 0, w == INF)
    bound = fin(x2) @ fin(w).T
    if b is not None:
        b = b.double()
        nan_terms = nan_terms + b.isnan().double()
        pos, neg = pos + (b == INF).double(), neg + (b == -INF).double()
        bound = bound + fin(b)
    is_nan = (nan_terms > 0) | ((pos > 0) & (neg > 0))
    return is_nan, (pos > 0) & ~is_nan, (neg > 0) & ~is_nan, bound


def linear_tol(ref: torch.Tensor, bound: torch.Tensor, K: int) -> torch.Tensor:
    return 1e-6 * ref.abs().nan_to_num(0, 0, 0) + (4 * math.sqrt(K) + 8) * EPS * bound + (K + 2) * FLT_MIN


def expected_dense_linear(x, w_dense, b, ref) -> Expected:
    """For the ops whose rule is ``x @ W.T + b`` with a dense weight (block-sparse, codebook)."""
    K, N = w_dense.shape[1], w_dense.shape[0]
    x2 = rows(x, K)
    is_nan, pinf, ninf, bound = linear_rule(x2, w_dense, b)
    lead = tuple(x.shape[:-1])
    r = ref.reshape(*lead, N)
    rs = lambda t: t.reshape(*lead, N)  # noqa: E731
    return Expected(r, rs(linear_tol(rows(r, N), bound, K)), rs((bound > LIMIT) & ~is_nan), rs(is_nan),
                    rs(pinf), rs(ninf))


def expected_bsr(x, values, col_indices, row_offsets, bias, N, K) -> Expected:
    ref = bsr_linear_reference(d64(x), d64(values), col_indices, row_offsets, d64(bias), N, K)
    w = bsr_to_dense(values.detach().double(), col_indices, row_offsets, (N, K))
    return expected_dense_linear(x, w, bias, ref)


def expected_codebook(x, packed, codebook, bias, K, bits, gs) -> Expected:
    ref = codebook_linear_reference(d64(x), packed, d64(codebook), d64(bias), K, bits, gs)
    w = codebook_dense(packed, codebook.detach().double(), bits, K, gs)
    return expected_dense_linear(x, w, bias, ref)


def expected_codebook_q8(x, packed, codebook, bias, K, bits, gs) -> tuple[Expected, torch.Tensor]:
    """The int8 option against its own reference (exact integer sums; only the final scaling and
    the bias add round: a few ulps). Also returns where the rule makes the output NaN: the rows
    with a non-finite input."""
    N = packed.shape[0]
    lead = tuple(x.shape[:-1])
    ref = codebook_linear_q8_reference(d64(x), packed, codebook.detach(), d64(bias), K, bits, gs)
    x2 = rows(x, K).float()
    xq, xs = quantize_rows_q8(x2)
    q, cs = quantize_codebook_q8(codebook.detach())
    idx = unpack_indices(packed, bits, K)
    group = torch.arange(N) // gs
    wq = q[group[:, None], idx]
    absdot = xq.double().abs() @ wq.double().abs().T
    scaled = xs.double()[:, None] * cs.double()[group][None, :] * absdot
    bf = fin(bias) if bias is not None else torch.zeros(N, dtype=torch.float64)
    tol = 1e-6 * rows(ref, N).abs().nan_to_num(0, 0, 0) + 8 * EPS * (scaled + bf) + 4 * FLT_MIN
    # overflow: any product order of xscale, cscale and the integer sum (|.| <= 127 * 127 * K)
    xs_f = fin(x2).amax(dim=1) / 127 if K else torch.zeros(x2.shape[0], dtype=torch.float64)
    cs_f = fin(codebook).amax(dim=1)[group] / 127 if codebook.shape[1] else torch.zeros(N, dtype=torch.float64)
    worst = xs_f.clamp_min(1)[:, None] * cs_f.clamp_min(1)[None, :] * max(1, 127 * 127 * K) + bf
    row_nonfinite = ~x2.isfinite().all(dim=1) if K else torch.zeros(x2.shape[0], dtype=torch.bool)
    amb = (worst > LIMIT) & ~row_nonfinite[:, None]
    rule_nan = row_nonfinite[:, None].expand(-1, N)
    return Expected(ref.reshape(*lead, N), tol.reshape(*lead, N), amb.reshape(*lead, N)), rule_nan.reshape(*lead, N)


def expected_xnor(x, packed, scale, bias, K, input_scale) -> Expected:
    N = packed.shape[0]
    lead = tuple(x.shape[:-1])
    ref = binary_linear_reference(d64(x), packed, d64(scale), d64(bias), K, input_scale)
    x2 = rows(x, K)
    wsf = fin(scale)[None, :]
    bf = fin(bias)[None, :] if bias is not None else 0.0
    if input_scale:
        s = fin(x2).sum(dim=1, keepdim=True)
        mean = s / max(K, 1)
        mag = K * wsf * mean
        tol = (K + 8) * EPS * mag + 4 * EPS * bf
        worst = max(K, 1) * wsf.clamp_min(1) * mean.clamp_min(1) + bf
        amb = (worst > LIMIT) | (s > LIMIT)
    else:
        tol = 4 * EPS * (K * wsf + bf)
        amb = (max(K, 1) * wsf.clamp_min(1) + bf) > LIMIT
    tol = tol + 1e-6 * rows(ref, N).abs().nan_to_num(0, 0, 0) + 4 * FLT_MIN
    amb = amb.expand(x2.shape[0], N)
    return Expected(ref.reshape(*lead, N), tol.reshape(*lead, N), amb.reshape(*lead, N))


def expected_sign_linear(x, packed, scale, bias, K) -> Expected:
    """BinaryConnect: the rule is y = (x @ S.T) * scale + b with S the +-1 weight."""
    N = packed.shape[0]
    lead = tuple(x.shape[:-1])
    ref = sign_linear_reference(d64(x), packed, d64(scale), d64(bias), K)
    x2 = rows(x, K)
    signs = unpack_signs(packed, K, torch.float64)
    is_nan, _, _, bound = linear_rule(x2, signs, None)
    wsf = fin(scale)[None, :]
    bf = fin(bias)[None, :] if bias is not None else 0.0
    tol = 1e-6 * rows(ref, N).abs().nan_to_num(0, 0, 0) + (4 * math.sqrt(K) + 8) * EPS * (bound * wsf + bf) \
        + (K + 4) * FLT_MIN
    amb = ((2 * bound * wsf.clamp_min(1) + bf) > LIMIT) & ~is_nan
    return Expected(ref.reshape(*lead, N), tol.reshape(*lead, N), amb.reshape(*lead, N))


def expected_binary_conv(x, packed, scale, bias, cin, k, s, p, d) -> Expected:
    ref = binary_conv2d_reference(d64(x), packed, d64(scale), d64(bias), cin, k, s, p, d)
    taps = k[0] * k[1] * cin
    wsf = fin(scale)[None, :, None, None]
    bf = fin(bias)[None, :, None, None] if bias is not None else 0.0
    tol = 4 * EPS * (taps * wsf + bf) + 1e-6 * ref.abs().nan_to_num(0, 0, 0) + 4 * FLT_MIN
    amb = ((max(taps, 1) * wsf.clamp_min(1) + bf) > LIMIT).expand(ref.shape)
    return Expected(ref, tol, amb)


def expected_dwsep(x, dw, bd, pw, bp, stride, padding, dilation, act1, act2) -> Expected:
    """PyTorch's float32 convolutions are the rule (the reference in the input's dtype); the bounds
    come from the same convolutions on |finite parts|, stage by stage."""
    ref = dwsep_conv2d_reference(x, dw, bd, pw, bp, stride, padding, dilation, act1, act2)
    C = x.shape[1]
    f32 = lambda t: None if t is None else fin(t).float()  # noqa: E731  (bounds: float32 is exact enough
    # and much faster; an overflow to inf is > LIMIT, and h is clamped before the second stage)
    h = F.conv2d(f32(x), f32(dw), f32(bd), tuple(stride), tuple(padding), tuple(dilation), groups=C)
    yb = F.conv2d(h.clamp_max(LIMIT * 10), f32(pw), f32(bp)).double()
    amb = (h > LIMIT).any(dim=1, keepdim=True) | (yb > LIMIT)
    taps = dw.shape[2] * dw.shape[3]
    tol = 1e-6 * ref.double().abs().nan_to_num(0, 0, 0) + 8 * EPS * (math.sqrt(taps) + math.sqrt(C) + 2) * yb \
        + (taps + C + 4) * FLT_MIN
    return Expected(ref, tol, amb.expand(ref.shape))


def draw_linear_inputs(data, M: int, N: int, K: int):
    """A linear case's bias (or None), its input ``[M, K]`` laid out as drawn, the layout's name
    and the thread count."""
    bias = data.draw(st.none() | values((N,)), label="bias")
    bias = None if bias is None else bias.build()
    x2 = data.draw(values((M, K)), label="x").build()
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    threads = data.draw(st.sampled_from((2, 1)), label="threads")
    return bias, lay_out(x2, layout), layout, threads


# ---------------------------------------------------------------- block-sparse linear

LIN_DIMS = (1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65)


@st.composite
def bsr_cases(draw):
    M = draw(sizes(0, 2 * BSR_PANEL + 5, [0, 1, 2, 3] + around(BSR_SMALL_M, BSR_DENSE_MIN_M, BSR_PANEL)))
    N = draw(sizes(1, 70, LIN_DIMS))
    K = draw(sizes(1, 70, LIN_DIMS))
    block = draw(st.tuples(st.sampled_from((1, 2, 3, 4, 5, 8, 16)), st.sampled_from((1, 2, 3, 4, 7, 8, 16, 32))))
    density = draw(st.sampled_from((0.5, 0.0, 0.1, 0.9, 1.0)))  # of the stored blocks
    mask_seed = draw(st.integers(0, 2**16))
    return dict(M=M, N=N, K=K, block=block, density=density, mask_seed=mask_seed)


@given(data=st.data())
def test_bsr_linear_matches_reference(data):
    c = data.draw(bsr_cases(), label="shape")
    M, N, K, block = c["M"], c["N"], c["K"], c["block"]
    Nb, Kb = -(-N // block[0]), -(-K // block[1])
    mask = torch.rand(Nb, Kb, generator=torch.Generator().manual_seed(c["mask_seed"])) < c["density"]
    w = data.draw(values((N, K)), label="weight").build()
    bsr = BSRWeight.from_dense(w, block, mask=mask)  # the part of a block outside W is stored as zeros
    bias, x, layout, threads = draw_linear_inputs(data, M, N, K)
    args = (bsr.values, bsr.col_indices, bsr.row_offsets, bias, N, K)
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.bsr_linear(x, *args))
    case = dict(M=M, N=N, K=K, block=block, nnz_blocks=bsr.nnz_blocks, of=Nb * Kb, layout=layout,
                x_shape=list(x.shape), bias=bias is not None, threads=threads)
    assert_matches("bsr_linear", case, outs, expected_bsr(x, *args))


# ---------------------------------------------------------------- codebook linear (exact and int8)


@st.composite
def codebook_cases(draw):
    bits = draw(st.sampled_from((1, 2, 3, 4)))
    M = draw(sizes(0, 110, [0, 1, 2, 3, 4, 5] + around(CB_DENSE_FROM_M[bits])))
    N = draw(st.one_of(sizes(1, 70, LIN_DIMS), st.sampled_from(around(CB_PANEL_ROWS))))
    K = draw(sizes(1, 70 if N <= 70 else 9, (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65)))
    gs = draw(st.sampled_from((1, 2, 3, 8, 16, N, N + 5)))
    return dict(bits=bits, M=M, N=N, K=K, group_size=gs)


def _codebook_case(data):
    c = data.draw(codebook_cases(), label="shape")
    bits, M, N, K, gs = c["bits"], c["M"], c["N"], c["K"], c["group_size"]
    G = num_groups(N, gs)
    idx_seed = data.draw(st.integers(0, 2**16), label="index seed")
    idx = torch.randint(0, 2**bits, (N, K), generator=torch.Generator().manual_seed(idx_seed))
    packed = pack_indices(idx, bits)
    codebook = data.draw(values((G, 2**bits)), label="codebook").build()
    bias, x, layout, threads = draw_linear_inputs(data, M, N, K)
    case = dict(M=M, N=N, K=K, bits=bits, group_size=gs, layout=layout, x_shape=list(x.shape),
                bias=bias is not None, threads=threads)
    return x, (packed, codebook, bias, K, bits, gs), case, threads


@given(data=st.data())
def test_codebook_linear_matches_reference(data):
    x, args, case, threads = _codebook_case(data)
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.codebook_linear(x, *args))
    assert_matches("codebook_linear", case, outs, expected_codebook(x, *args))


@given(data=st.data())
def test_codebook_int8_option_matches_its_reference(data):
    x, args, case, threads = _codebook_case(data)
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.codebook_linear_q8(x, *args))
    exp, rule_nan = expected_codebook_q8(x, *args)
    # the documented int8 rule: a row holding any non-finite input is all NaN (reference and kernels)
    if bool(rule_nan.any()):
        ref_ok = bool(exp.ref[rule_nan].isnan().all())
        bad = {isa: int((~y[rule_nan].isnan()).sum()) for isa, y in outs.items() if not bool(y[rule_nan].isnan().all())}
        if not ref_ok or bad:
            raise AssertionError(
                f"codebook_linear_q8 (case: {case}): a row with a non-finite input must be all NaN; "
                f"reference {'ok' if ref_ok else 'NOT all NaN'}; kernels with non-NaN outputs in such rows "
                f"(backend cpu, ISA: count): {bad}")
    assert_matches("codebook_linear_q8", case, outs, exp)


# ---------------------------------------------------------------- binary: XNOR, BinaryConnect, conv


@st.composite
def binary_linear_cases(draw):
    M = draw(sizes(0, 40, (0, 1, 2, 3, 4, 5, 8, 9)))
    N = draw(sizes(1, 70, LIN_DIMS))
    K = draw(sizes(1, 200, (1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)))
    return dict(M=M, N=N, K=K)


def _binary_linear_case(data):
    c = data.draw(binary_linear_cases(), label="shape")
    M, N, K = c["M"], c["N"], c["K"]
    w = data.draw(values((N, K)), label="weight (signs; 0 and -0 pack as +1)").build()
    packed = pack_signs(w)
    scale = data.draw(values((N,), positive=True), label="weight_scale").build()
    bias, x, layout, threads = draw_linear_inputs(data, M, N, K)
    case = dict(M=M, N=N, K=K, layout=layout, x_shape=list(x.shape), bias=bias is not None, threads=threads)
    return x, packed, scale, bias, K, case, threads


@given(data=st.data())
def test_xnor_binary_linear_matches_reference(data):
    x, packed, scale, bias, K, case, threads = _binary_linear_case(data)
    input_scale = data.draw(st.booleans(), label="input_scale")
    case["input_scale"] = input_scale
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.binary_linear(x, packed, scale, bias, K, input_scale))
    assert_matches("binary_linear (XNOR)", case, outs, expected_xnor(x, packed, scale, bias, K, input_scale))


@given(data=st.data())
def test_binaryconnect_sign_linear_matches_reference(data):
    x, packed, scale, bias, K, case, threads = _binary_linear_case(data)
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.sign_linear(x, packed, scale, bias, K))
    assert_matches("sign_linear (BinaryConnect)", case, outs, expected_sign_linear(x, packed, scale, bias, K))


@given(data=st.data())
def test_xnor_gemm_matches_reference(data):
    M = data.draw(sizes(0, 40, (0, 1, 2, 3, 4, 5, 16, 17)), label="M")
    N = data.draw(sizes(0, 80, (0, 1, 2, 3, 63, 64, 65)), label="N")
    K = data.draw(sizes(0, 300, (0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257)), label="K")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    g = torch.Generator().manual_seed(seed)
    W = packed_words(K)
    # whole random words: the padding bits past K are random too (the kernels must mask them)
    a = torch.randint(-(2**62), 2**62, (M, W), generator=g) * 2 + torch.randint(0, 2, (M, W), generator=g)
    b = torch.randint(-(2**62), 2**62, (N, W), generator=g) * 2 + torch.randint(0, 2, (N, W), generator=g)
    expected = xnor_gemm_reference(a, b, K)
    for isa, y in run_every_isa(lambda: ops.xnor_gemm(a, b, K)).items():
        assert y.dtype == torch.int32 and y.shape == expected.shape, (isa, y.dtype, y.shape)
        if not torch.equal(y, expected):
            flat = (y != expected).reshape(-1).nonzero()[0, 0].item()
            raise AssertionError(f"xnor_gemm (M={M}, N={N}, K={K}) [backend cpu, ISA {isa}]: "
                                 f"{int((y != expected).sum())} differ, first at {_fmt_idx(flat, y.shape)}: "
                                 f"kernel {y.reshape(-1)[flat].item()}, reference {expected.reshape(-1)[flat].item()}")


def _image_layout(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if fmt == "sliced":  # every other column of a wider image whose skipped columns are NaN
        buf = torch.full((*x.shape[:3], 2 * x.shape[3]), NAN)
        buf[..., ::2] = x
        return buf[..., ::2]
    return x


@st.composite
def conv_geometry(draw, max_kernel: int, max_hw: int):
    kh = draw(st.integers(1, max_kernel))
    kw = draw(st.integers(1, max_kernel))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(st.tuples(st.sampled_from((1, 1, 2, 3)), st.sampled_from((1, 1, 2, 3))))
    padding = draw(st.tuples(st.integers(0, 4), st.integers(0, 4)))
    # the padded input must hold the dilated kernel: H >= d (k - 1) + 1 - 2 p
    H = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), max(max_hw, dilation[0] * (kh - 1) + 1)))
    W = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), max(max_hw, dilation[1] * (kw - 1) + 1)))
    return dict(kernel=(kh, kw), stride=stride, padding=padding, dilation=dilation, H=H, W=W)


@given(data=st.data())
def test_binary_conv2d_matches_reference(data):
    geo = data.draw(conv_geometry(4, 10), label="geometry")
    k, s, p, d, H, W = (geo[n] for n in ("kernel", "stride", "padding", "dilation", "H", "W"))
    Nimg = data.draw(sizes(0, 3, (1,)), label="batch")
    cin = data.draw(sizes(1, 140, (1, 2, 3, 17, 63, 64, 65, 128, 129)), label="C_in")
    cout = data.draw(sizes(1, 40, (1, 3, 15, 16, 17, 33)), label="C_out")
    w = data.draw(values((cout, cin, *k)), label="weight (signs)").build()
    packed = pack_conv_weight(w)
    scale = data.draw(values((cout,), positive=True), label="weight_scale").build()
    bias = data.draw(st.none() | values((cout,)), label="bias")
    bias = None if bias is None else bias.build()
    x = data.draw(values((Nimg, cin, H, W)), label="x").build()
    fmt = data.draw(st.sampled_from(("nchw", "channels_last", "sliced")), label="memory format")
    threads = data.draw(st.sampled_from((2, 1)), label="threads")
    x = _image_layout(x, fmt)
    args = (packed, scale, bias, cin, list(k), list(s), list(p), list(d))
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.binary_conv2d(x, *args))
    case = dict(N=Nimg, C_in=cin, C_out=cout, H=H, W=W, kernel=k, stride=s, padding=p, dilation=d, format=fmt,
                bias=bias is not None, threads=threads)
    assert_matches("binary_conv2d", case, outs, expected_binary_conv(x, *args), torch.contiguous_format)


# ---------------------------------------------------------------- fused depthwise-separable conv


CHANNELS = (1, 2, 3, 5, 8, 16, 17, 31, 32, 33, 63, 64, 65)


@given(data=st.data())
def test_dwsep_conv2d_matches_reference(data):
    geo = data.draw(conv_geometry(9, 20), label="geometry")
    k, s, p, d, H, W = (geo[n] for n in ("kernel", "stride", "padding", "dilation", "H", "W"))
    Nimg = data.draw(sizes(0, 3, (1,)), label="batch")
    C = data.draw(sizes(1, 70, CHANNELS), label="C")
    Co = data.draw(sizes(1, 70, CHANNELS), label="C_out")
    x = data.draw(values((Nimg, C, H, W)), label="x").build()
    dw = data.draw(values((C, 1, *k)), label="dw_weight").build()
    pw = data.draw(values((Co, C, 1, 1)), label="pw_weight").build()
    bd = data.draw(st.none() | values((C,)), label="dw_bias")
    bp = data.draw(st.none() | values((Co,)), label="pw_bias")
    bd, bp = (None if b is None else b.build() for b in (bd, bp))
    act1 = data.draw(st.integers(0, len(ACTIVATIONS) - 1), label="act1")
    act2 = data.draw(st.integers(0, len(ACTIVATIONS) - 1), label="act2")
    fmt = data.draw(st.sampled_from(("nchw", "channels_last", "sliced")), label="memory format")
    threads = data.draw(st.sampled_from((2, 1)), label="threads")
    x = _image_layout(x, fmt)
    args = (dw, bd, pw, bp, list(s), list(p), list(d), act1, act2)
    with num_threads(threads):
        outs = run_every_isa(lambda: ops.dwsep_conv2d(x, *args))
    case = dict(N=Nimg, C=C, C_out=Co, H=H, W=W, kernel=k, stride=s, padding=p, dilation=d,
                act1=ACTIVATIONS[act1], act2=ACTIVATIONS[act2], format=fmt, dw_bias=bd is not None,
                pw_bias=bp is not None, threads=threads)
    mf = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    assert_matches("dwsep_conv2d", case, outs, expected_dwsep(x, *args), mf)


# ---------------------------------------------------------------- empty dimensions


EMPTY_OPS = ("bsr_linear", "codebook_linear", "codebook_linear_q8", "binary_linear", "sign_linear")


@pytest.mark.parametrize("op", EMPTY_OPS)
@given(data=st.data())
def test_linear_ops_with_an_empty_dimension(op, data):
    """N = 0 or K = 0 (the ops' checks allow both): the kernels and the reference agree."""
    M = data.draw(st.sampled_from((0, 1, 3, 30)), label="M")
    N, K = data.draw(st.sampled_from(((0, 5), (4, 0), (0, 0), (7, 0))), label="(N, K)")
    x = data.draw(values((M, K)), label="x").build()
    bias = data.draw(st.none() | values((N,)), label="bias")
    bias = None if bias is None else bias.build()
    case = dict(M=M, N=N, K=K, bias=bias is not None)
    if op == "bsr_linear":
        w = BSRWeight.from_dense(torch.randn(N, K), (2, 3), sparsity=0.5)
        args = (w.values, w.col_indices, w.row_offsets, bias, N, K)
        exp = lambda: expected_bsr(x, *args)  # noqa: E731
    elif op.startswith("codebook"):
        packed = pack_indices(torch.randint(0, 4, (N, K)), 2)
        args = (packed, torch.randn(num_groups(N, 4), 4), bias, K, 2, 4)
        exp = (lambda: expected_codebook(x, *args)) if op == "codebook_linear" else \
            (lambda: expected_codebook_q8(x, *args)[0])
    else:
        args = (pack_signs(torch.randn(N, K)), torch.rand(N), bias, K)
        if op == "binary_linear":
            input_scale = data.draw(st.booleans(), label="input_scale")
            case["input_scale"] = input_scale
            args = args + (input_scale,)
            exp = lambda: expected_xnor(x, *args)  # noqa: E731
        else:
            exp = lambda: expected_sign_linear(x, *args)  # noqa: E731
    outs = run_every_isa(lambda: getattr(ops, op)(x, *args))
    assert_matches(op, case, outs, exp())


# ---------------------------------------------------------------- modules (3-D inputs, their own paths)


MODULE_KINDS = ("block_sparse", "codebook", "codebook_int8", "xnor", "binaryconnect")


def _linear_module(kind: str, data, K: int, N: int):
    """A module with drawn (special-valued) weights, and a function giving its Expected for x."""
    bias = data.draw(st.none() | values((N,)), label="bias")
    bias = None if bias is None else bias.build()
    w = data.draw(values((N, K)), label="weight").build()
    if kind == "block_sparse":
        block = data.draw(st.sampled_from(((4, 4), (1, 8), (8, 1), (3, 5))), label="block")
        mask = torch.rand(-(-N // block[0]), -(-K // block[1])) < data.draw(st.sampled_from((0.5, 0.1, 1.0)),
                                                                           label="density")
        mod = sparsekit.nn.BlockSparseLinear.from_bsr(BSRWeight.from_dense(w, block, mask=mask), bias)
        return mod, lambda x: expected_bsr(x, mod.values, mod.col_indices, mod.row_offsets, mod.bias, N, K)
    if kind.startswith("codebook"):
        bits = data.draw(st.sampled_from((1, 2, 3, 4)), label="bits")
        gs = data.draw(st.sampled_from((1, 4, N)), label="group_size")
        mod = sparsekit.nn.CodebookLinear(K, N, bias=bias is not None, bits=bits, group_size=gs,
                                          compute="int8" if kind == "codebook_int8" else "exact")
        cb = data.draw(values((num_groups(N, gs), 2**bits)), label="codebook").build()
        with torch.no_grad():
            mod.codebook.copy_(cb)
            mod.indices.copy_(pack_indices(torch.randint(0, 2**bits, (N, K)), bits))
            if bias is not None:
                mod.bias.copy_(bias)
        if kind == "codebook":
            return mod, lambda x: expected_codebook(x, mod.indices, mod.codebook, mod.bias, K, bits, gs)
        return mod, lambda x: expected_codebook_q8(x, mod.indices, mod.codebook, mod.bias, K, bits, gs)[0]
    input_scale = kind == "xnor" and data.draw(st.booleans(), label="input_scale")
    mod = sparsekit.nn.BinaryLinear(K, N, bias=bias is not None, input_scale=input_scale,
                                    binarize_input=kind == "xnor")
    scale = data.draw(values((N,), positive=True), label="weight_scale").build()
    with torch.no_grad():
        mod.weight_packed.copy_(pack_signs(w))
        mod.weight_scale.copy_(scale)
        if bias is not None:
            mod.bias.copy_(bias)
    if kind == "xnor":
        return mod, lambda x: expected_xnor(x, mod.weight_packed, mod.weight_scale, mod.bias, K, input_scale)
    return mod, lambda x: expected_sign_linear(x, mod.weight_packed, mod.weight_scale, mod.bias, K)


@pytest.mark.parametrize("kind", MODULE_KINDS)
@given(data=st.data())
def test_linear_modules_match_reference(kind, data):
    """The modules' own call paths (eager without dispatch, the int8 option's native path for 2-D
    contiguous input, the registered op when gradients are on) on 2-D and 3-D inputs."""
    N = data.draw(sizes(1, 40, (1, 16, 17, 33)), label="out_features")
    K = data.draw(sizes(1, 70, (1, 3, 16, 17, 64, 65)), label="in_features")
    lead = data.draw(st.sampled_from(((1,), (5,), (2, 3), (3, 1, 2), (0, 4), (40,))), label="leading shape")
    layout = data.draw(st.sampled_from(("contiguous", "transposed")), label="layout")
    grad = data.draw(st.booleans(), label="grad enabled") and kind != "codebook_int8"
    torch.manual_seed(data.draw(st.integers(0, 2**16), label="torch seed"))
    mod, expected = _linear_module(kind, data, K, N)
    mod.eval()
    x = data.draw(values((*lead, K)), label="x").build()
    if layout == "transposed":  # the same values, features not the fastest-moving dimension
        x = x.movedim(-1, 0).contiguous().movedim(0, -1)

    def call():
        with torch.set_grad_enabled(grad):
            return mod(x).detach()

    outs = run_every_isa(call)
    case = dict(kind=kind, N=N, K=K, x_shape=list(x.shape), contiguous=x.is_contiguous(), grad=grad)
    assert_matches(f"{type(mod).__name__} module", case, outs, expected(x))


# ---------------------------------------------------------------- derived state never goes stale


STALE_STEPS = ("call", "inplace", "data", "replace", "numpy", "load_state_dict", "inference_mode")


def _dwsep_module(C, Co, k):
    mod = sparsekit.nn.DepthwiseSeparableConv2d(C, Co, k, padding=k // 2, act1="relu")
    return mod.eval()


@pytest.mark.parametrize("kind", ("block_sparse", "codebook", "codebook_int8", "xnor", "dwsep"))
@given(data=st.data())
def test_weight_updates_are_always_seen(kind, data):
    """A sequence of calls and weight updates (in place, through ``.data``, a replaced parameter,
    a write through a NumPy view, ``load_state_dict``, calls under ``inference_mode``): every call
    gives the reference of the weights as they are then (nothing derived from a weight, such as a
    densified, transposed or quantized copy, outlives an update). Finite values only."""
    steps = data.draw(st.lists(st.sampled_from(STALE_STEPS), min_size=1, max_size=6), label="steps")
    isa = data.draw(st.sampled_from(_ext.supported_isas()), label="ISA")
    torch.manual_seed(data.draw(st.integers(0, 2**16), label="torch seed"))
    if kind == "dwsep":
        mod = _dwsep_module(17, 70, 3)
        x = torch.randn(1, 17, 6, 7).contiguous(memory_format=torch.channels_last)  # transposed-weight path
        names = ("pw_weight", "dw_weight", "pw_bias")
    else:
        N, K = 40, 33
        if kind == "block_sparse":
            mod = sparsekit.nn.BlockSparseLinear.from_dense(nn.Linear(K, N), (8, 8), sparsity=0.2)
            names = ("values", "bias")
            M = max(BSR_DENSE_MIN_M, BSR_SMALL_M) + 9  # the large-M (formerly dense-fallback) path
        elif kind.startswith("codebook"):
            mod = sparsekit.nn.CodebookLinear.from_dense(nn.Linear(K, N), bits=2, group_size=8,
                                                         compute="int8" if kind == "codebook_int8" else "exact")
            names = ("codebook", "bias")
            M = 3 if kind == "codebook_int8" else CB_DENSE_FROM_M[2] + 3  # int8: the native eager path
        else:
            mod = sparsekit.nn.BinaryLinear.from_dense(nn.Linear(K, N), input_scale=True)
            names = ("weight_scale", "bias")
            M = 5
        mod.eval()
        x = torch.randn(M, K)

    def expected() -> torch.Tensor:  # the reference function on the module's tensors as they are now
        m = mod
        with torch.no_grad():
            if kind == "dwsep":
                return dwsep_conv2d_reference(x, m.dw_weight, m.dw_bias, m.pw_weight, m.pw_bias, list(m.stride),
                                              list(m.padding), list(m.dilation), m.act1, m.act2).double()
            if kind == "block_sparse":
                return bsr_linear_reference(d64(x), d64(m.values), m.col_indices, m.row_offsets, d64(m.bias), N, K)
            if kind == "codebook":
                return codebook_linear_reference(d64(x), m.indices, d64(m.codebook), d64(m.bias), K, m.bits,
                                                 m.group_size)
            if kind == "codebook_int8":
                return codebook_linear_q8_reference(d64(x), m.indices, m.codebook.detach(), d64(m.bias), K, m.bits,
                                                    m.group_size)
            return binary_linear_reference(d64(x), m.weight_packed, d64(m.weight_scale), d64(m.bias), K, True)

    for i, step in enumerate(steps):
        name = names[i % len(names)]
        t = getattr(mod, name)
        with torch.no_grad():
            if step == "inplace":
                t.mul_(-1.5)
            elif step == "data":
                t.data.add_(0.75)
            elif step == "replace":
                new = (t.detach() * 2 + 0.5).clone()
                setattr(mod, name, nn.Parameter(new, requires_grad=False) if isinstance(t, nn.Parameter) else new)
            elif step == "numpy":
                t.detach().numpy()[...] *= -1.0
            if step in ("data", "numpy") and hasattr(mod, "refresh"):
                # a module keeping a copy of a weight between calls documents that writes the
                # version counter does not see need refresh() (DepthwiseSeparableConv2d)
                mod.refresh()
            if step == "load_state_dict":
                sd = {k: v.clone() for k, v in mod.state_dict().items()}
                sd[name] = sd[name] * 0.5 - 0.25
                mod.load_state_dict(sd)
        with sparsekit.use_backend("cpu"), _ext.use_cpu_isa(isa):
            if step == "inference_mode":
                with torch.inference_mode():
                    y = mod(x)
            else:
                with torch.no_grad():
                    y = mod(x)
        want = expected()
        tol = 1e-4 * (1 + want.abs())
        if not bool(((y.double() - want).abs() <= tol).all()):
            flat = ((y.double() - want).abs() > tol).reshape(-1).nonzero()[0, 0].item()
            raise AssertionError(
                f"{type(mod).__name__} [backend cpu, ISA {isa}] after steps {steps[: i + 1]} (the last on "
                f"{name!r}): the output does not follow the weights (stale derived state?): first at "
                f"{_fmt_idx(flat, y.shape)}: kernel {y.reshape(-1)[flat].item()!r}, reference of the current "
                f"weights {want.reshape(-1)[flat].item()!r}")
