// The binary ops on the CPU: xnor_gemm, binary_linear (XNOR-Net), sign_linear (BinaryConnect)
// and binary_conv2d: argument checks, the kernels (one per instruction set, picked at run time)
// and their registration with PyTorch's dispatcher. Schemas, fakes and the Python kernels:
// sparsekit/binary/op.py. The packing steps are ops of their own here too (_pack_signs,
// _conv_im2col), native-only, for the tests that check them alone.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "binary/args.h"
#include "common/conv.h"
#include "common/isa.h"
#include "common/tensor.h"

namespace sk {
namespace {

const IsaKernels<void (*)(const XnorGemmArgs&)> kXnorGemm{portable::xnor_gemm, avx2::xnor_gemm, avx512::xnor_gemm,
                                                          avx512vp::xnor_gemm, amx::xnor_gemm};
const IsaKernels<void (*)(const PackSignsArgs&)> kPackSigns{portable::pack_signs, avx2::pack_signs,
                                                            avx512::pack_signs};
const IsaKernels<void (*)(const SignLinearArgs&)> kSignLinear{portable::sign_linear, avx2::sign_linear,
                                                              avx512::sign_linear};
const IsaKernels<void (*)(const ConvIm2colArgs&)> kConvIm2col{portable::conv_im2col, avx2::conv_im2col,
                                                              avx512::conv_im2col};

// Bit operations (XNOR GEMM: rows x columns x words; sign-add: multiply-adds) under which one
// thread runs the call.
constexpr int64_t kSerialWork = 1 << 16;

int64_t packed_words(int64_t K) { return ceil_div(K, 64); }

// Row length (words) the XNOR GEMM runs fastest on: the AMX tiles take any length; the vector
// kernels prefer whole 8-word vectors.
int64_t xnor_row_words(int64_t words, int64_t M, int64_t N, bool conv_out, int nthreads) {
  if (current_isa() == Isa::amx && amx::takes(M, N, conv_out, nthreads)) return words;
  return round_up(words, 8, "words rounded up to 8");
}

// x float32 [R, K] -> int64 [R, ceil(K / 64)] sign words; scale (if defined) [R] = mean |x| per row.
at::Tensor pack_rows(const at::Tensor& x2, const at::Tensor& scale, int nthreads) {
  const int64_t R = x2.size(0), K = x2.size(1), W = packed_words(K);
  at::Tensor out = new_tensor({R, W}, x2.options().dtype(at::kLong), "the packed signs");
  PackSignsArgs p{};
  p.x = cdata<float>(x2);
  p.out = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  p.scale = scale.defined() ? scale.data_ptr<float>() : nullptr;
  p.R = R, p.K = K, p.W = W, p.nthreads = nthreads;
  if (W == 0) {  // no elements: nothing to pack, and the mean |x| of an empty row is 0
    if (scale.defined()) scale.zero_();
    return out;
  }
  kPackSigns.get()(p);
  return out;
}

// x float32 [R, K] -> its packed sign words (the op _pack_signs)
at::Tensor pack_signs_op(const at::Tensor& x) {
  check_tensor(x, "x", at::kFloat, 2);
  const at::Tensor x2 = x.contiguous();
  return pack_rows(x2, at::Tensor(), threads_for(x.numel(), kSerialWork));
}

// Runs the XNOR GEMM of a [M, W] and b [N, W] words (contiguous) into g's output.
void run_xnor(XnorGemmArgs& g, const at::Tensor& a, const at::Tensor& b, int64_t K, int64_t last_bits) {
  g.a = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  g.b = reinterpret_cast<const uint64_t*>(b.data_ptr<int64_t>());
  g.M = a.size(0), g.N = b.size(0), g.W = a.size(1), g.K = K, g.last_bits = last_bits;
  g.nthreads = threads_for(checked_mul(checked_mul(g.M, g.N, "M * N"), std::max<int64_t>(g.W, 1), "the work"),
                           kSerialWork);
  if (g.M == 0 || g.N == 0) return;
  kXnorGemm.get()(g);
}

void check_xnor_operands(const at::Tensor& a, const at::Tensor& b, int64_t K) {
  check_tensor(a, "a", at::kLong, 2);
  check_tensor(b, "b", at::kLong, 2);
  SK_CHECK(K >= 0, "K must be >= 0, got " << K);
  const int64_t W = packed_words(K);
  check_size(a, "a", 1, W);
  check_size(b, "b", 1, W);
}

// int32 [M, N] dot products of the +-1 vectors packed in a [M, W] and b [N, W].
at::Tensor xnor_gemm_cpu(const at::Tensor& a, const at::Tensor& b, int64_t K) {
  check_xnor_operands(a, b, K);
  SK_CHECK(K <= std::numeric_limits<int32_t>::max(), "K=" << K << ": the dot products do not fit int32");
  if (!run_native(true, "xnor_gemm", a)) {
    static const auto fallback = fallback_op<decltype(xnor_gemm_cpu)>("sparsekit::_xnor_gemm_fallback");
    return fallback.call(a, b, K);
  }
  at::Tensor out = new_tensor({a.size(0), b.size(0)}, a.options().dtype(at::kInt), "the output");
  XnorGemmArgs g{};
  g.out = out.data_ptr<int32_t>();
  run_xnor(g, a.contiguous(), b.contiguous(), K, K % 64 == 0 ? 64 : K % 64);
  return out;
}

// The checks binary_linear and sign_linear share; returns the bias (or undefined).
at::Tensor check_binary_linear(const at::Tensor& x, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                               const std::optional<at::Tensor>& bias, int64_t K) {
  check_input(x);
  check_tensor(weight_packed, "weight_packed", at::kLong, 2);
  SK_CHECK(K >= 0, "in_features must be >= 0, got " << K);
  const int64_t N = weight_packed.size(0);
  check_size(weight_packed, "weight_packed", 1, packed_words(K));
  check_tensor(weight_scale, "weight_scale", x.scalar_type(), 1);
  check_size(weight_scale, "weight_scale", 0, N);
  SK_CHECK(x.dim() >= 1 && x.size(-1) == K, "x must have shape [..., " << K << "] (in_features), got " << x.sizes());
  return check_optional(bias, "bias", x.scalar_type(), N);
}

// XNOR-Net linear: x binarized (and packed) here, times the packed weight signs; the epilogue
// applies weight_scale, the input's mean |x| per row (input_scale) and the bias.
at::Tensor binary_linear_cpu(const at::Tensor& x, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                             const std::optional<at::Tensor>& bias, int64_t K, bool input_scale) {
  const at::Tensor b = check_binary_linear(x, weight_packed, weight_scale, bias, K);
  if (!run_native(x.scalar_type() == at::kFloat, "binary_linear", x)) {
    static const auto fallback = fallback_op<decltype(binary_linear_cpu)>("sparsekit::_binary_linear_fallback");
    return fallback.call(x, weight_packed, weight_scale, bias, K, input_scale);
  }
  const int64_t N = weight_packed.size(0);
  const at::Tensor x2 = as_matrix(x, K);
  const int64_t M = x2.size(0);
  at::Tensor out = new_tensor({M, N}, x.options(), "the output");
  if (M > 0 && N > 0) {
    at::Tensor scale = input_scale ? at::empty({M}, x.options()) : at::Tensor();
    const at::Tensor xp = pack_rows(x2, scale, threads_for(x2.numel(), kSerialWork));
    const at::Tensor ws = weight_scale.contiguous(), bc = b.defined() ? b.contiguous() : b;
    XnorGemmArgs g{};
    g.out_f = out.data_ptr<float>();
    g.col_scale = cdata<float>(ws);
    g.row_scale = scale.defined() ? cdata<float>(scale) : nullptr;
    g.bias = cdata<float>(bc);
    run_xnor(g, xp, weight_packed.contiguous(), K, K % 64 == 0 ? 64 : K % 64);
  }
  return out.view(linear_out_shape(x, N));
}

// BinaryConnect: real x times the packed +-1 weight signs, scaled per output, plus bias.
at::Tensor sign_linear_cpu(const at::Tensor& x, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                           const std::optional<at::Tensor>& bias, int64_t K) {
  const at::Tensor b = check_binary_linear(x, weight_packed, weight_scale, bias, K);
  if (!run_native(x.scalar_type() == at::kFloat, "sign_linear", x)) {
    static const auto fallback = fallback_op<decltype(sign_linear_cpu)>("sparsekit::_sign_linear_fallback");
    return fallback.call(x, weight_packed, weight_scale, bias, K);
  }
  const int64_t N = weight_packed.size(0);
  const at::Tensor x2 = as_matrix(x, K), w = weight_packed.contiguous(), ws = weight_scale.contiguous();
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const int64_t M = x2.size(0);
  at::Tensor out = new_tensor({M, N}, x.options(), "the output");
  if (M > 0 && N > 0) {
    SignLinearArgs s{};
    s.x = cdata<float>(x2);
    s.w = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
    s.scale = cdata<float>(ws);
    s.bias = cdata<float>(bc);
    s.y = out.data_ptr<float>();
    s.M = M, s.N = N, s.K = K, s.W = packed_words(K);
    s.nthreads = threads_for(checked_mul(checked_mul(M, N, "M * N"), K, "the work"), kSerialWork);
    kSignLinear.get()(s);
  }
  return out.view(linear_out_shape(x, N));
}

// The word im2col of a binarized image batch: x float32 [N, C, H, W] (NCHW or channels_last
// memory) -> int64 [N * OH * OW, row_words], each output pixel's receptive field as packed
// channel signs in kernel order (padding pixels +1), zero words past kh * kw * ceil(C / 64).
at::Tensor im2col(const at::Tensor& x, const ConvGeometry& g, int64_t row_words, int nthreads) {
  const bool nhwc = is_channels_last(x);
  const at::Tensor xm = nhwc ? x : x.contiguous();
  ConvIm2colArgs a{};
  a.N = g.N, a.C = g.C, a.H = g.H, a.W = g.W, a.nhwc = nhwc;
  a.Wc = packed_words(a.C);
  a.kh = g.kh, a.kw = g.kw, a.sh = g.sh, a.sw = g.sw, a.ph = g.ph, a.pw = g.pw, a.dh = g.dh, a.dw = g.dw;
  a.OH = g.OH, a.OW = g.OW;
  a.row_words = row_words;
  const int64_t field_words = checked_mul(g.taps, a.Wc, "kh * kw * ceil(C/64) words");
  SK_CHECK(row_words >= field_words, "row_words must be at least kh*kw*ceil(C/64) = " << field_words << ", got "
                                                                                       << row_words);
  at::Tensor out = new_tensor({g.out_pixels, row_words}, x.options().dtype(at::kLong), "the receptive fields' words");
  // every input pixel's channels as sign words (scratch slot 6: no kernel of this call uses it)
  a.pix = static_cast<uint64_t*>(thread_scratch(
      scratch_bytes(checked_mul(g.in_pixels, a.Wc, "the packed input pixels"), sizeof(uint64_t),
                    "the packed input pixels"), 6));
  a.x = cdata<float>(xm);
  a.out = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  a.nthreads = nthreads;
  kConvIm2col.get()(a);
  return out;
}

at::Tensor conv_im2col_op(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t row_words) {
  check_tensor(x, "x", at::kFloat, 4);
  const ConvGeometry g = conv_geometry(x, kernel, stride, padding, dilation);
  return im2col(x, g, row_words, at::get_num_threads());
}

// XNOR-Net convolution (groups = 1): the word im2col of x, then one XNOR GEMM whose scale/bias
// epilogue writes the NCHW output. The weight's padding bits (past C in each tap's last word)
// are cleared here, as the reference ignores them.
at::Tensor binary_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight_packed, const at::Tensor& weight_scale,
                             const std::optional<at::Tensor>& bias, int64_t in_channels, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_input(x, 4);
  SK_CHECK(x.size(1) == in_channels, "x must have shape [N, " << in_channels << ", H, W] (in_channels), got "
                                                              << x.sizes());
  const ConvGeometry g = conv_geometry(x, kernel_size, stride, padding, dilation);
  check_tensor(weight_packed, "weight_packed", at::kLong, 2);
  const int64_t Co = weight_packed.size(0), Wc = packed_words(in_channels);
  const int64_t field_words = checked_mul(g.taps, Wc, "kh * kw * ceil(C/64) words");
  check_size(weight_packed, "weight_packed", 1, field_words);
  check_tensor(weight_scale, "weight_scale", x.scalar_type(), 1);
  check_size(weight_scale, "weight_scale", 0, Co);
  const at::Tensor b = check_optional(bias, "bias", x.scalar_type(), Co);
  if (!run_native(x.scalar_type() == at::kFloat, "binary_conv2d", x)) {
    static const auto fallback = fallback_op<decltype(binary_conv2d_cpu)>("sparsekit::_binary_conv2d_fallback");
    return fallback.call(x, weight_packed, weight_scale, bias, in_channels, kernel_size, stride, padding, dilation);
  }
  at::Tensor out = new_tensor({g.N, Co, g.OH, g.OW}, x.options(), "the output");
  if (out.numel() == 0) return out;  // nothing to compute: no workspace either
  const int nthreads = at::get_num_threads();
  const int64_t rows = g.out_pixels;
  const int64_t row_words = xnor_row_words(field_words, rows, Co, true, nthreads);
  const at::Tensor cols = im2col(x, g, row_words, nthreads);
  // the weight rows at row_words, padding bits and words zero: nothing to mask (last_bits = 64)
  at::Tensor w = new_tensor({Co, row_words}, weight_packed.options(), "the padded weight").zero_();
  {
    const at::Tensor src = weight_packed.contiguous();
    const int64_t* s = src.data_ptr<int64_t>();
    int64_t* d = w.data_ptr<int64_t>();
    const uint64_t last = in_channels % 64 == 0 ? ~uint64_t(0) : (uint64_t(1) << (in_channels % 64)) - 1;
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t t = 0; t < g.taps; ++t)
        for (int64_t k = 0; k < Wc; ++k) {
          uint64_t v = static_cast<uint64_t>(s[o * field_words + t * Wc + k]);
          if (k == Wc - 1) v &= last;
          d[o * row_words + t * Wc + k] = static_cast<int64_t>(v);
        }
  }
  const at::Tensor ws = weight_scale.contiguous(), bc = b.defined() ? b.contiguous() : b;
  XnorGemmArgs xg{};
  xg.out_f = out.data_ptr<float>();
  xg.out_hw = g.OH * g.OW;
  xg.col_scale = cdata<float>(ws);
  xg.bias = cdata<float>(bc);
  if (xg.out_hw > 0) run_xnor(xg, cols, w, checked_mul(g.taps, in_channels, "kh * kw * C"), 64);
  return out;
}

}  // namespace
}  // namespace sk

TORCH_LIBRARY_FRAGMENT(sparsekit, m) {
  // native-only steps, defined here with their kernels (no fake, no Python kernel)
  m.def("_pack_signs(Tensor x) -> Tensor");
  m.def("_conv_im2col(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "int row_words) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) {
  m.impl("xnor_gemm", &sk::xnor_gemm_cpu);
  m.impl("binary_linear", &sk::binary_linear_cpu);
  m.impl("sign_linear", &sk::sign_linear_cpu);
  m.impl("binary_conv2d", &sk::binary_conv2d_cpu);
  m.impl("_pack_signs", &sk::pack_signs_op);
  m.impl("_conv_im2col", &sk::conv_im2col_op);
}
