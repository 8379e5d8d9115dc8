// The one Python module of sparsekit's CPU kernels: argument checks, then dispatch
// to the instruction set chosen at run time. No kernel logic lives here.
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "bsr_nonfinite.h"
#include "codebook_decode.h"
#include "huffman.h"
#include "common.h"
#include "isa.h"

namespace sk {
namespace {


// Per-thread scratch that only grows: a fresh buffer per call would pay page faults (and
// zero-filling) on every call. `floats` comes from the arguments: checked and bounded first.
float* scratch(int64_t floats, const char* what) {
  static thread_local std::vector<float> buf;
  const size_t n = scratch_bytes(floats, sizeof(float), what) / sizeof(float);
  if (buf.size() < n) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(n);
  }
  return buf.data();
}

// The bitwise OR of n index words: the check of an empty batch's indices, which no kernel reads
// (with a batch, the kernels OR the words during their own pass).
uint32_t index_words_or(const py::array& idx) {
  const auto* w = static_cast<const uint32_t*>(idx.data());
  uint32_t r = 0;
  for (int64_t i = 0, n = idx.size(); i < n; ++i) r |= w[i];
  return r;
}


// Validates the BSR index arrays: O(nnz), before any kernel reads through them.
void check_bsr_indices(const int32_t* row_off, int64_t Nb, const int32_t* cols, int64_t nnz, int64_t Kb) {
  SK_CHECK(row_off[0] == 0, "row_offsets[0] must be 0, got " << row_off[0]);
  for (int64_t r = 0; r < Nb; ++r)
    SK_CHECK(row_off[r] <= row_off[r + 1], "row_offsets must be non-decreasing (row_offsets["
                                               << r << "]=" << row_off[r] << " > row_offsets[" << r + 1
                                               << "]=" << row_off[r + 1] << ")");
  SK_CHECK(row_off[Nb] == nnz, "row_offsets[-1] must equal the number of blocks " << nnz << ", got " << row_off[Nb]);
  for (int64_t b = 0; b < nnz; ++b)
    SK_CHECK(cols[b] >= 0 && cols[b] < Kb,
             "col_indices[" << b << "]=" << cols[b] << " is out of range [0, " << Kb << ")");
}

// Checks the BSR arrays against the logical shape (N, K); returns (nnz, bh, bw, Nb, Kb).
struct BsrShape {
  int64_t nnz, bh, bw, Nb, Kb;
};
BsrShape check_bsr(const py::array& values, const py::array& cols, const py::array& row_off, int64_t N, int64_t K) {
  check_array<float>(values, "values", 3);
  check_array<int32_t>(cols, "col_indices", 1);
  check_array<int32_t>(row_off, "row_offsets", 1);
  SK_CHECK(N >= 0 && K >= 0, "shape must be non-negative, got (" << N << ", " << K << ")");
  BsrShape s{values.shape(0), values.shape(1), values.shape(2), 0, 0};
  SK_CHECK(s.bh >= 1 && s.bw >= 1, "block size must be positive, got (" << s.bh << ", " << s.bw << ")");
  s.Nb = ceil_div(N, s.bh);
  s.Kb = ceil_div(K, s.bw);
  check_dim(cols, "col_indices", 0, s.nnz);
  check_dim(row_off, "row_offsets", 0, checked_add(s.Nb, 1, "ceil(N / bh) + 1 row offsets"));
  check_bsr_indices(static_cast<const int32_t*>(row_off.data()), s.Nb, static_cast<const int32_t*>(cols.data()),
                    s.nnz, s.Kb);
  return s;
}

void bsr_linear(const py::array& x, const py::array& values, const py::array& cols, const py::array& row_off,
                const py::object& bias, py::array& y, int64_t N, int64_t K, int64_t small_m, int nthreads) {
  check_array<float>(x, "x", 2);
  check_array<float>(y, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  const BsrShape s = check_bsr(values, cols, row_off, N, K);
  const int64_t M = x.shape(0);
  check_dim(x, "x", 1, K);
  check_dim(y, "out", 0, M);
  check_dim(y, "out", 1, N);
  const float* bias_ptr = nullptr;
  py::array bias_arr;
  if (!bias.is_none()) {
    bias_arr = bias.cast<py::array>();
    check_array<float>(bias_arr, "bias", 1);
    check_dim(bias_arr, "bias", 0, N);
    bias_ptr = static_cast<const float*>(bias_arr.data());
  }
  BsrLinearArgs a{};
  a.x = static_cast<const float*>(x.data());
  a.values = static_cast<const float*>(values.data());
  a.cols = static_cast<const int32_t*>(cols.data());
  a.row_off = static_cast<const int32_t*>(row_off.data());
  a.bias = bias_ptr;
  a.y = static_cast<float*>(y.mutable_data());
  a.M = M;
  a.N = N;
  a.K = K;
  a.bh = s.bh;
  a.bw = s.bw;
  a.Nb = s.Nb;
  a.Kb = s.Kb;
  a.small_m = small_m;
  a.nthreads = nthreads;
  if (M == 0 || N == 0) return;  // nothing to compute, no scratch to size
  // the kernel's workspace: x padded to whole blocks (small M), or per thread a packed panel of
  // kBsrPanel rows and its transposed output (large M)
  const int64_t Kp = checked_mul(s.Kb, s.bw, "in_features padded to whole blocks");
  const int64_t Np = checked_mul(s.Nb, s.bh, "out_features padded to whole blocks");
  const int64_t work = M <= small_m ? checked_mul(M, Kp, "the padded activations")
                                    : checked_mul(checked_mul(checked_add(Kp, Np, "the panel workspace"), kBsrPanel,
                                                              "the panel workspace"),
                                                  nthreads, "the panel workspace of every thread");
  a.work = scratch(checked_add(work, 1, "bsr_linear's workspace"), "bsr_linear's workspace");
  const auto fn = kernels(current_isa()).bsr_linear;
  {
    py::gil_scoped_release release;
    fn(a);
    bsr_propagate_nonfinite(a.x, M, K, a.cols, a.row_off, s.Nb, s.Kb, s.bh, s.bw, a.y, N, nthreads);
  }
}

// Optional float32 [n] array, or nullptr for None.
const float* optional_floats(const py::object& obj, const char* name, int64_t n, py::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = obj.cast<py::array>();
  check_array<float>(keep, name, 1);
  check_dim(keep, name, 0, n);
  return static_cast<const float*>(keep.data());
}

// a [M, W], b [N, W]: int64 words holding 64 packed signs each (bit 1 = +1). Writes the
// dot products into out: int32 [M, N], or float32 [M, N] through the scale/bias epilogue
// (col_scale required, row_scale and bias optional).
// last_bits (1..64, default from K): bits of each row's last word that hold elements; with
// rows made of several packed groups (convolutions), K counts the elements and last_bits
// describes the final group only (padding inside rows must be zero in both operands).
void xnor_gemm(const py::array& a, const py::array& b, py::array& out, int64_t K, int nthreads,
               const py::object& col_scale, const py::object& row_scale, const py::object& bias,
               int64_t last_bits, int64_t out_hw) {
  check_array<int64_t>(a, "a", 2);
  check_array<int64_t>(b, "b", 2);
  check_nthreads(nthreads);
  const int64_t M = a.shape(0), N = b.shape(0), W = a.shape(1);
  SK_CHECK(K >= 0, "K must be >= 0, got " << K);
  if (last_bits == 0) {  // one packed group per row
    SK_CHECK(ceil_div(K, 64) == W,
             "a and b must hold ceil(K/64) = " << ceil_div(K, 64) << " words per row for K=" << K << ", got " << W);
    last_bits = K % 64 == 0 ? 64 : K % 64;
  }
  SK_CHECK(last_bits >= 1 && last_bits <= 64, "last_bits must be in [1, 64], got " << last_bits);
  SK_CHECK(K <= checked_mul(64, W, "the bits of a row (64 * words)"),
           "K=" << K << " elements do not fit in " << W << " words per row");
  check_dim(b, "b", 1, W);
  XnorGemmArgs g{};
  py::array keep_c, keep_r, keep_b;
  SK_CHECK(out_hw >= 0, "out_hw must be >= 0, got " << out_hw);
  if (col_scale.is_none()) {  // int32 dot products
    SK_CHECK(out_hw == 0, "out_hw needs the float epilogue (col_scale)");
    SK_CHECK(K <= std::numeric_limits<int32_t>::max(),
             "K=" << K << ": the dot products do not fit the int32 output (pass col_scale for float output)");
    check_array<int32_t>(out, "out", 2, /*writable=*/true);
    check_dim(out, "out", 0, M);
    check_dim(out, "out", 1, N);
    g.out = static_cast<int32_t*>(out.mutable_data());
  } else {  // float epilogue, into [M, N] or, with out_hw, an NCHW batch [M / out_hw, N, H, W]
    if (out_hw > 0) {
      check_array<float>(out, "out", 4, /*writable=*/true);
      SK_CHECK(M % out_hw == 0 && out.shape(0) == M / out_hw && out.shape(1) == N &&
                   checked_mul(out.shape(2), out.shape(3), "out.shape[2] * out.shape[3]") == out_hw,
               "out must have shape [" << M / out_hw << ", " << N << ", H, W] with H*W=" << out_hw);
    } else {
      check_array<float>(out, "out", 2, /*writable=*/true);
      check_dim(out, "out", 0, M);
      check_dim(out, "out", 1, N);
    }
    g.out_f = static_cast<float*>(out.mutable_data());
    g.out_hw = out_hw;
    g.col_scale = optional_floats(col_scale, "col_scale", N, keep_c);
    g.row_scale = optional_floats(row_scale, "row_scale", M, keep_r);
    g.bias = optional_floats(bias, "bias", N, keep_b);
  }
  g.a = static_cast<const uint64_t*>(a.data());
  g.b = static_cast<const uint64_t*>(b.data());
  g.M = M;
  g.N = N;
  g.W = W;
  g.K = K;
  g.last_bits = last_bits;
  g.nthreads = nthreads;
  const auto fn = kernels(current_isa()).xnor_gemm;
  py::gil_scoped_release release;
  fn(g);
}

// BinaryConnect: y [M, N] = scale[n] * (x [M, K] . signs of w [N, ceil(K/64)]) + bias[n].
void sign_linear(const py::array& x, const py::array& w, const py::array& scale, const py::object& bias,
                 py::array& y, int nthreads) {
  check_array<float>(x, "x", 2);
  check_array<int64_t>(w, "w", 2);
  check_array<float>(y, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
  check_dim(w, "w", 1, ceil_div(K, 64));
  check_dim(y, "out", 0, M);
  check_dim(y, "out", 1, N);
  py::array keep_s, keep_b;
  SignLinearArgs s{};
  s.scale = optional_floats(scale, "scale", N, keep_s);
  SK_CHECK(s.scale != nullptr, "scale is required");
  s.bias = optional_floats(bias, "bias", N, keep_b);
  s.x = static_cast<const float*>(x.data());
  s.w = static_cast<const uint64_t*>(w.data());
  s.y = static_cast<float*>(y.mutable_data());
  s.M = M;
  s.N = N;
  s.K = K;
  s.W = ceil_div(K, 64);
  s.nthreads = nthreads;
  if (M == 0 || N == 0) return;  // nothing to compute
  const auto fn = kernels(current_isa()).sign_linear;
  py::gil_scoped_release release;
  fn(s);
}

// x float32 [R, K] -> out int64 [R, ceil(K/64)]; scale float32 [R] (mean |x| per row) or None.
void pack_signs(const py::array& x, py::array& out, const py::object& scale, int nthreads) {
  check_array<float>(x, "x", 2);
  check_array<int64_t>(out, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  const int64_t R = x.shape(0), K = x.shape(1), W = ceil_div(K, 64);
  check_dim(out, "out", 0, R);
  check_dim(out, "out", 1, W);
  PackSignsArgs p{};
  py::array keep;
  if (!scale.is_none()) {
    keep = scale.cast<py::array>();
    check_array<float>(keep, "scale", 1, /*writable=*/true);
    check_dim(keep, "scale", 0, R);
    p.scale = static_cast<float*>(keep.mutable_data());
  }
  p.x = static_cast<const float*>(x.data());
  p.out = static_cast<uint64_t*>(out.mutable_data());
  p.R = R;
  p.K = K;
  p.W = W;
  p.nthreads = nthreads;
  const auto fn = kernels(current_isa()).pack_signs;
  py::gil_scoped_release release;
  fn(p);
}

// A convolution's geometry from a 4-D input (NCHW, or the memory of a channels_last tensor with
// nhwc) and its per-axis kernel, stride, padding and dilation; checked before any use. Every
// product and sum the kernels form from it fits in int64: H + 2 * ph, dh * (kh - 1), kh * kw and
// the pixel counts below (an input pixel's or output pixel's offset is then at most such a sum).
struct ConvGeometry {
  int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  int64_t taps;        // kh * kw
  int64_t in_pixels;   // N * H * W
  int64_t out_pixels;  // N * OH * OW
};
ConvGeometry conv_geometry(const py::array& x, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                           const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, bool nhwc) {
  SK_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
           "kernel, stride, padding and dilation must have 2 entries each");
  for (int i = 0; i < 2; ++i)
    SK_CHECK(kernel[i] >= 1 && stride[i] >= 1 && padding[i] >= 0 && dilation[i] >= 1,
             "need kernel >= 1, stride >= 1, padding >= 0, dilation >= 1, got kernel=" << kernel[i] << " stride="
                 << stride[i] << " padding=" << padding[i] << " dilation=" << dilation[i]);
  ConvGeometry g{};
  g.N = x.shape(0);
  g.C = x.shape(nhwc ? 3 : 1);
  g.H = x.shape(nhwc ? 1 : 2);
  g.W = x.shape(nhwc ? 2 : 3);
  g.kh = kernel[0], g.kw = kernel[1], g.sh = stride[0], g.sw = stride[1];
  g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  SK_CHECK(g.C >= 1, "x must have at least one channel");
  const int64_t Hp = checked_add(g.H, checked_mul(2, g.ph, "2 * padding[0]"), "the padded input height");
  const int64_t Wp = checked_add(g.W, checked_mul(2, g.pw, "2 * padding[1]"), "the padded input width");
  const int64_t kh_span = checked_add(checked_mul(g.dh, g.kh - 1, "dilation[0] * (kernel[0] - 1)"), 1,
                                      "the dilated kernel height");
  const int64_t kw_span = checked_add(checked_mul(g.dw, g.kw - 1, "dilation[1] * (kernel[1] - 1)"), 1,
                                      "the dilated kernel width");
  SK_CHECK(Hp >= kh_span && Wp >= kw_span, "the padded input (" << Hp << " x " << Wp
                                                                << ") is smaller than the dilated kernel (" << kh_span
                                                                << " x " << kw_span << ")");
  g.OH = (Hp - kh_span) / g.sh + 1;
  g.OW = (Wp - kw_span) / g.sw + 1;
  g.taps = checked_mul(g.kh, g.kw, "kernel[0] * kernel[1]");
  g.in_pixels = checked_mul(checked_mul(g.N, g.H, "the input's pixels"), g.W, "the input's pixels");
  checked_mul(g.in_pixels, g.C, "the input's elements");
  g.out_pixels = checked_mul(checked_mul(g.N, g.OH, "the output's pixels"), g.OW, "the output's pixels");
  checked_mul(g.OH, g.OW, "the output pixels of an image");
  return g;
}

// x float32 [N, C, H, W] -> out int64 [N * OH * OW, row_words]: the packed signs of every
// output pixel's receptive field (see ConvIm2colArgs).
void conv_im2col(const py::array& x, py::array& out, const std::vector<int64_t>& kernel,
                 const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                 const std::vector<int64_t>& dilation, bool nhwc, int nthreads) {
  check_array<float>(x, "x", 4);
  check_array<int64_t>(out, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  const ConvGeometry g = conv_geometry(x, kernel, stride, padding, dilation, nhwc);
  ConvIm2colArgs a{};
  a.N = g.N, a.C = g.C, a.H = g.H, a.W = g.W;
  a.nhwc = nhwc;
  a.Wc = ceil_div(a.C, 64);
  a.kh = g.kh, a.kw = g.kw, a.sh = g.sh, a.sw = g.sw, a.ph = g.ph, a.pw = g.pw, a.dh = g.dh, a.dw = g.dw;
  a.OH = g.OH, a.OW = g.OW;
  check_dim(out, "out", 0, g.out_pixels);
  a.row_words = out.shape(1);
  const int64_t field_words = checked_mul(g.taps, a.Wc, "kh * kw * ceil(C/64) words");
  SK_CHECK(a.row_words >= field_words,
           "out must hold at least kh*kw*ceil(C/64) = " << field_words << " words per row, got " << a.row_words);
  static thread_local std::vector<uint64_t> pix;  // every input pixel's channels as sign words
  const size_t need = scratch_bytes(checked_mul(g.in_pixels, a.Wc, "the packed input pixels"),
                                    sizeof(uint64_t), "the packed input pixels") / sizeof(uint64_t);
  if (pix.size() < need) pix.resize(need);
  a.x = static_cast<const float*>(x.data());
  a.pix = pix.data();
  a.out = static_cast<uint64_t*>(out.mutable_data());
  a.nthreads = nthreads;
  const auto fn = kernels(current_isa()).conv_im2col;
  py::gil_scoped_release release;
  fn(a);
}

// Fused depthwise kh x kw -> act1 -> pointwise 1 x 1 -> act2 (see DwsepArgs). x [N, C, H, W]
// and y [N, Co, OH, OW], or with nhwc x [N, H, W, C] and y [N, OH, OW, Co] (the memory of
// channels_last tensors); wd [C, kh * kw], wp [Co, C], biases [C] / [Co] or None.
void dwsep_conv2d(const py::array& x, const py::array& wd, const py::object& bd, const py::array& wp,
                  const py::object& bp, py::array& y, const std::vector<int64_t>& kernel,
                  const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                  const std::vector<int64_t>& dilation, int act1, int act2, bool nhwc, int nthreads,
                  const py::object& wpt) {
  check_array<float>(x, "x", 4);
  check_array<float>(wd, "depthwise_weight", 2);
  check_array<float>(wp, "pointwise_weight", 2);
  check_array<float>(y, "out", 4, /*writable=*/true);
  check_nthreads(nthreads);
  SK_CHECK(act1 >= 0 && act1 <= 3 && act2 >= 0 && act2 <= 3, "act1 and act2 must be in 0..3, got " << act1 << ", "
                                                                                                     << act2);
  const ConvGeometry g = conv_geometry(x, kernel, stride, padding, dilation, nhwc);
  DwsepArgs a{};
  a.N = g.N, a.C = g.C, a.H = g.H, a.W = g.W;
  a.kh = g.kh, a.kw = g.kw, a.sh = g.sh, a.sw = g.sw, a.ph = g.ph, a.pw = g.pw, a.dh = g.dh, a.dw = g.dw;
  a.OH = g.OH, a.OW = g.OW;
  check_dim(wd, "depthwise_weight", 0, a.C);
  check_dim(wd, "depthwise_weight", 1, g.taps);
  a.Co = wp.shape(0);
  check_dim(wp, "pointwise_weight", 1, a.C);
  check_dim(y, "out", 0, a.N);
  check_dim(y, "out", nhwc ? 3 : 1, a.Co);
  check_dim(y, "out", nhwc ? 1 : 2, a.OH);
  check_dim(y, "out", nhwc ? 2 : 3, a.OW);
  py::array keep_d, keep_p;
  a.bd = optional_floats(bd, "depthwise_bias", a.C, keep_d);
  a.bp = optional_floats(bp, "pointwise_bias", a.Co, keep_p);
  py::array keep_t;
  if (!wpt.is_none()) {  // the pointwise weight transposed and padded by the caller (cached)
    SK_CHECK(nhwc, "pointwise_weight_t is for channels_last (nhwc) only");
    keep_t = wpt.cast<py::array>();
    check_array<float>(keep_t, "pointwise_weight_t", 3);
    check_dim(keep_t, "pointwise_weight_t", 0, ceil_div(a.Co, 64));
    check_dim(keep_t, "pointwise_weight_t", 1, a.C);
    check_dim(keep_t, "pointwise_weight_t", 2, 64);
    a.wpt = static_cast<const float*>(keep_t.data());
  }
  a.x = static_cast<const float*>(x.data());
  a.wd = static_cast<const float*>(wd.data());
  a.wp = static_cast<const float*>(wp.data());
  a.y = static_cast<float*>(y.mutable_data());
  a.act1 = act1, a.act2 = act2, a.nhwc = nhwc, a.nthreads = nthreads;
  const auto fn = kernels(current_isa()).dwsep_conv2d;
  py::gil_scoped_release release;
  fn(a);
}

// Checks the arguments shared by both codebook entry points and fills the exact kernel's args.
CodebookLinearArgs codebook_args(const py::array& x, const py::array& idx, const py::array& codebook,
                                 const py::object& bias, py::array& y, int64_t bits, int64_t group_size,
                                 int nthreads, py::array& keep_b) {
  check_array<float>(x, "x", 2);
  check_array<int32_t>(idx, "indices", 2);
  check_array<float>(codebook, "codebook", 2);
  check_array<float>(y, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  SK_CHECK(bits >= 1 && bits <= 4, "bits must be 1, 2, 3 or 4, got " << bits);
  SK_CHECK(group_size >= 1, "group_size must be >= 1, got " << group_size);
  const int64_t M = x.shape(0), K = x.shape(1), N = idx.shape(0);
  const int64_t field = bits == 3 ? 4 : bits, per = 32 / field, Wd = ceil_div(K, per);
  check_dim(idx, "indices", 1, Wd);
  // the table-lookup kernel gathers 16 rows' words at int32 offsets (16 * Wd)
  SK_CHECK(Wd < (int64_t{1} << 25), "in_features=" << K << " is too large for the codebook kernels");
  check_dim(codebook, "codebook", 0, ceil_div(N, group_size));
  check_dim(codebook, "codebook", 1, int64_t{1} << bits);
  check_dim(y, "out", 0, M);
  check_dim(y, "out", 1, N);
  CodebookLinearArgs a{};
  a.x = static_cast<const float*>(x.data());
  a.idx = static_cast<const uint32_t*>(idx.data());
  a.codebook = static_cast<const float*>(codebook.data());
  a.bias = optional_floats(bias, "bias", N, keep_b);
  a.y = static_cast<float*>(y.mutable_data());
  a.M = M, a.N = N, a.K = K, a.Wd = Wd, a.bits = bits, a.field = field, a.group_size = group_size;
  a.nthreads = nthreads;
  if (M == 0 && bits == 3) check_index_words(index_words_or(idx), bits, "indices");  // no kernel reads them
  return a;
}

// Runs a codebook kernel without the GIL, then checks the index words it read.
template <typename Args>
void run_codebook_kernel(void (*fn)(const Args&), Args& a) {
  uint32_t words_or = 0;
  a.words_or = &words_or;
  {
    py::gil_scoped_release release;
    fn(a);
  }
  check_index_words(words_or, a.bits, "indices");
}

// y float32 [M, N] = x [M, K] @ (codebook[n / group_size][idx[n, k]]).T + bias
void codebook_linear(const py::array& x, const py::array& idx, const py::array& codebook, const py::object& bias,
                     py::array& y, int64_t bits, int64_t group_size, int nthreads) {
  py::array keep_b;
  CodebookLinearArgs a = codebook_args(x, idx, codebook, bias, y, bits, group_size, nthreads, keep_b);
  run_codebook_kernel(kernels(current_isa()).codebook_linear, a);
}

// The int8 option: y float32 [M, N] from x [M, K], indices and the float codebook [G, 2^bits],
// whose centroids are quantized here per group (as reference.quantize_codebook_q8: scale =
// max |c| / 127, c / scale rounded to nearest even; entries past 2^bits repeat v & (2^bits - 1); a group
// with a non-finite centroid has scale NaN).
void codebook_linear_q8(const py::array& x, const py::array& idx, const py::array& codebook, const py::object& bias,
                        py::array& y, int64_t bits, int64_t group_size, int nthreads) {
  py::array keep_b;
  const CodebookLinearArgs e = codebook_args(x, idx, codebook, bias, y, bits, group_size, nthreads, keep_b);
  const int64_t G = ceil_div(e.N, group_size), ncb = int64_t{1} << bits;  // G = codebook.shape[0]: it exists
  std::vector<int8_t> q(static_cast<size_t>(G * 16));
  std::vector<float> cscale(static_cast<size_t>(G));
  for (int64_t g = 0; g < G; ++g) {
    const float* cb = e.codebook + g * ncb;
    float amax = 0.f;
    bool finite = true;
    for (int64_t v = 0; v < ncb; ++v) {
      const float c = std::fabs(cb[v]);
      finite = finite && c <= std::numeric_limits<float>::max();  // false for Inf and NaN
      amax = std::max(amax, c);
    }
    // a non-finite centroid makes its group's scale NaN (every output of the group is NaN) and
    // its quantized values 0
    const float scale = finite ? amax / 127.f : std::numeric_limits<float>::quiet_NaN();
    cscale[g] = scale;
    for (int64_t v = 0; v < 16; ++v) {
      const float r = scale > 0.f ? std::nearbyint(cb[v & (ncb - 1)] / scale) : 0.f;
      q[g * 16 + v] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, r)));
    }
  }
  CodebookQ8Args a{};
  a.x = e.x, a.idx = e.idx, a.qcodebook = q.data(), a.cscale = cscale.data(), a.bias = e.bias, a.y = e.y;
  a.M = e.M, a.N = e.N, a.K = e.K, a.Wd = e.Wd, a.bits = e.bits, a.field = e.field, a.group_size = e.group_size;
  a.nthreads = nthreads;
  run_codebook_kernel(kernels(current_isa()).codebook_linear_q8, a);
}

// out float32 [rows, K] = the weight rows row0 .. row0+rows-1 of a codebook weight (idx holds those rows)
void codebook_decode_py(const py::array& idx, const py::array& codebook, py::array& out, int64_t bits,
                        int64_t group_size, int64_t row0, int nthreads) {
  check_array<int32_t>(idx, "indices", 2);
  check_array<float>(codebook, "codebook", 2);
  check_array<float>(out, "out", 2, /*writable=*/true);
  check_nthreads(nthreads);
  SK_CHECK(bits >= 1 && bits <= 4, "bits must be 1, 2, 3 or 4, got " << bits);
  SK_CHECK(group_size >= 1, "group_size must be >= 1, got " << group_size);
  SK_CHECK(row0 >= 0, "row0 must be >= 0, got " << row0);
  const int64_t rows = out.shape(0), K = out.shape(1), field = bits == 3 ? 4 : bits, per = 32 / field;
  check_dim(idx, "indices", 0, rows);
  check_dim(idx, "indices", 1, ceil_div(K, per));
  check_dim(codebook, "codebook", 1, int64_t{1} << bits);
  const int64_t end = checked_add(row0, rows, "row0 + rows");  // every row index below fits
  SK_CHECK(rows == 0 || (end - 1) / group_size < codebook.shape(0),
           "codebook has " << codebook.shape(0) << " groups, rows up to " << end << " need "
                           << (end - 1) / group_size + 1);
  const auto* ip = static_cast<const uint32_t*>(idx.data());
  const auto* cp = static_cast<const float*>(codebook.data());
  auto* op = static_cast<float*>(out.mutable_data());
  uint32_t words_or;
  {
    py::gil_scoped_release release;
    words_or = codebook_decode(ip, idx.shape(1), cp, bits, field, group_size, row0, rows, K, op, nthreads);
  }
  check_index_words(words_or, bits, "indices");
}

std::vector<uint8_t> huffman_lengths(const py::array& lengths) {
  if (!lengths.dtype().is(py::dtype::of<uint8_t>()))
    throw py::type_error("lengths must be uint8, got " + std::string(py::str(lengths.dtype())));
  SK_CHECK(lengths.ndim() == 1 && (lengths.flags() & py::array::c_style), "lengths must be a contiguous 1-D array");
  // symbols are int32: an alphabet past 2^31 could not be addressed (and its Kraft sum could wrap)
  SK_CHECK(lengths.shape(0) <= (int64_t{1} << 31), "lengths must have at most 2^31 entries, got " << lengths.shape(0));
  const auto* p = static_cast<const uint8_t*>(lengths.data());
  return std::vector<uint8_t>(p, p + lengths.shape(0));
}

// symbols int32 [n] -> bytes of their canonical Huffman codes (lengths uint8 [alphabet])
py::bytes huffman_encode_py(const py::array& symbols, const py::array& lengths) {
  check_array<int32_t>(symbols, "symbols", 1);
  const std::vector<uint8_t> len = huffman_lengths(lengths);
  const auto* s = static_cast<const int32_t*>(symbols.data());
  const int64_t n = symbols.shape(0), bits = huffman_encoded_bits(s, n, len);
  std::string out(static_cast<size_t>((bits + 7) / 8), '\0');
  huffman_encode(s, n, len, reinterpret_cast<uint8_t*>(&out[0]));
  return py::bytes(out);
}

void huffman_decode_py(const py::bytes& data, const py::array& lengths, py::array& out) {
  check_array<int32_t>(out, "out", 1, /*writable=*/true);
  const std::vector<uint8_t> len = huffman_lengths(lengths);
  const std::string buf = data;
  auto* o = static_cast<int32_t*>(out.mutable_data());
  huffman_decode(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<int64_t>(buf.size()), out.shape(0), len, o);
}

}  // namespace
}  // namespace sk

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "sparsekit CPU kernels";
  sk::current_isa();  // a bad SPARSEKIT_CPU_ISA fails the import (reported when a kernel is first needed)
  m.def("cpu_isa", [] { return sk::isa_name(sk::current_isa()); }, "Instruction set the kernels run with.");
  m.def("set_cpu_isa", &sk::set_isa, py::arg("name"), "Select avx512, avx2 or portable (must be supported).");
  m.def("supported_isas", &sk::supported_isas, "Instruction sets this CPU can run, best first.");
  m.def("bsr_linear", &sk::bsr_linear, py::arg("x"), py::arg("values"), py::arg("col_indices"),
        py::arg("row_offsets"), py::arg("bias"), py::arg("out"), py::arg("N"), py::arg("K"), py::arg("small_m"),
        py::arg("nthreads"), "out[M, N] = x[M, K] @ W.T + bias with W in BSR form.");
  m.def("xnor_gemm", &sk::xnor_gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("K"), py::arg("nthreads"),
        py::arg("col_scale") = py::none(), py::arg("row_scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("last_bits") = 0, py::arg("out_hw") = 0,
        "out[M, N] = K - 2 popcount(a[m] ^ b[n]): dot products of bit-packed +-1 rows (int32), or\n"
        "with col_scale, dot * col_scale[n] * row_scale[m] + bias[n] (float32).");
  m.def("sign_linear", &sk::sign_linear, py::arg("x"), py::arg("w"), py::arg("scale"), py::arg("bias"), py::arg("out"),
        py::arg("nthreads"), "BinaryConnect: out = scale * (x . sign(w)) + bias, w packed 64 signs per word.");
  m.def("pack_signs", &sk::pack_signs, py::arg("x"), py::arg("out"), py::arg("scale"), py::arg("nthreads"),
        "out = signs of x packed 64 per int64 word (bit 1 where x >= 0); scale[r] = mean |x[r]|.");
  m.def(
      "xnor_row_words",
      [](int64_t words, int64_t M, int64_t N, bool conv_out, int nthreads) {
        SK_CHECK(words >= 0 && M >= 0 && N >= 0, "words, M and N must be >= 0, got " << words << ", " << M << ", " << N);
        sk::check_nthreads(nthreads);
        // the AMX tiles take any row length; the vector kernels prefer whole 8-word vectors
        if (sk::current_isa() == sk::Isa::amx && sk::amx::takes(M, N, conv_out, nthreads)) return words;
        return sk::round_up(words, 8, "words rounded up to 8");
      },
      py::arg("words"), py::arg("M"), py::arg("N"), py::arg("conv_out"), py::arg("nthreads"),
      "Row length (words) the XNOR GEMM runs fastest on for these sizes: words, or rounded up to 8.");
  m.def("conv_im2col", &sk::conv_im2col, py::arg("x"), py::arg("out"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("nhwc"), py::arg("nthreads"),
        "out[N*OH*OW, row_words] = packed signs of each output pixel's receptive field in x [N, C, H, W]\n"
        "(or [N, H, W, C] with nhwc) "
        "(padding pixels +1, zero words past kh*kw*ceil(C/64)).");
  m.def("dwsep_conv2d", &sk::dwsep_conv2d, py::arg("x"), py::arg("depthwise_weight"), py::arg("depthwise_bias"),
        py::arg("pointwise_weight"), py::arg("pointwise_bias"), py::arg("out"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("act1"), py::arg("act2"), py::arg("nhwc"),
        py::arg("nthreads"), py::arg("pointwise_weight_t") = py::none(),
        "Fused depthwise -> pointwise convolution, fp32 (NCHW or channels_last memory). pointwise_weight_t: "
        "optional transposed pointwise weight in panels of 64 output channels, [ceil(Co / 64), C, 64], zero past "
        "Co (channels_last).");
  m.def("codebook_linear", &sk::codebook_linear, py::arg("x"), py::arg("indices"), py::arg("codebook"),
        py::arg("bias"), py::arg("out"), py::arg("bits"), py::arg("group_size"), py::arg("nthreads"),
        "out = x @ W.T + bias with W[n, k] = codebook[n / group_size][index (n, k)], indices packed in int32.");
  m.def("codebook_linear_q8", &sk::codebook_linear_q8, py::arg("x"), py::arg("indices"), py::arg("codebook"),
        py::arg("bias"), py::arg("out"), py::arg("bits"), py::arg("group_size"), py::arg("nthreads"),
        "The int8 option: x quantized per row and centroids per group to int8, exact int32 sums.");
  m.def("codebook_decode", &sk::codebook_decode_py, py::arg("indices"), py::arg("codebook"), py::arg("out"),
        py::arg("bits"), py::arg("group_size"), py::arg("row0"), py::arg("nthreads"),
        "out[r, k] = codebook[(row0 + r) / group_size][index (r, k)]: float rows of a codebook weight.");
  m.def("huffman_encode", &sk::huffman_encode_py, py::arg("symbols"), py::arg("lengths"),
        "Canonical Huffman codes of int32 symbols (code lengths uint8 per symbol), MSB-first bytes.");
  m.def("huffman_decode", &sk::huffman_decode_py, py::arg("data"), py::arg("lengths"), py::arg("out"),
        "Decodes out.shape[0] symbols; ValueError on a truncated or invalid stream.");
}
