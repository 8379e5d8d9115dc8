// The codebook ops on the CPU: codebook_linear (exact) and codebook_linear_q8 (the int8
// option): argument checks, the kernels (one per instruction set, picked at run time), the
// autograd formula of the exact op, and their registration with PyTorch's dispatcher. Schemas,
// fakes, the Python kernels and the gradient ops: sparsekit/codebook/op.py.
//
// Small M: the table-lookup matmul on the packed indices (codebook/kernel.h); the weight is never
// expanded. From kDenseFromM rows, where a lookup costs as much as a multiply-add and PyTorch's
// dense GEMM is the faster exact path: panels of kPanelRows weight rows are decoded to floats
// (kept in cache, never the whole matrix) and multiplied by PyTorch, panel by panel.
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "codebook/args.h"
#include "codebook/decode.h"
#include "common/isa.h"
#include "common/tensor.h"

namespace sk {
namespace {

// the avx512vp level runs the int8 option in registers (VPDPBUSD) where the CPU has VNNI and
// VBMI (Ice Lake, Zen 4), else the generic integer path
void avx512vp_codebook_linear_q8(const CodebookQ8Args& a) {
  if (cpu_has_vnni_vbmi())
    amx::codebook_linear_q8_vnni(a);
  else
    avx512::codebook_linear_q8(a);
}

const IsaKernels<void (*)(const CodebookLinearArgs&)> kCodebookLinear{
    portable::codebook_linear, avx2::codebook_linear, avx512::codebook_linear};
const IsaKernels<void (*)(const CodebookQ8Args&)> kCodebookQ8{portable::codebook_linear_q8, avx2::codebook_linear_q8,
                                                              avx512::codebook_linear_q8, avx512vp_codebook_linear_q8,
                                                              amx::codebook_linear_q8};

constexpr int64_t kPanelRows = 512;
// activation rows from which the decoded-panel path beats table lookup (measured, K = N = 4096):
// a lookup does 4 / field multiply-adds per lane, so the wider the field the sooner
int64_t dense_from_m(int64_t bits) { return bits == 1 ? 96 : bits == 2 ? 32 : 16; }
// multiply-adds under which one thread runs the call
constexpr int64_t kSerialWork = 1 << 17;

// The bitwise OR of n index words: the check of an empty batch's indices, which no kernel reads
// (with a batch, the kernels OR the words during their own pass).
uint32_t index_words_or(const at::Tensor& idx) {
  const auto* w = reinterpret_cast<const uint32_t*>(idx.data_ptr<int32_t>());
  uint32_t r = 0;
  for (int64_t i = 0, n = idx.numel(); i < n; ++i) r |= w[i];
  return r;
}

void check_bits(int64_t bits, int64_t group_size) {
  SK_CHECK(bits >= 1 && bits <= 4, "bits must be 1, 2, 3 or 4, got " << bits);
  SK_CHECK(group_size >= 1, "group_size must be >= 1, got " << group_size);
}

// Checks the arguments both ops share; returns the bias (or undefined).
at::Tensor check_codebook(const at::Tensor& x, const at::Tensor& indices, const at::Tensor& codebook,
                          const std::optional<at::Tensor>& bias, int64_t K, int64_t bits, int64_t group_size) {
  check_bits(bits, group_size);
  check_input(x);
  SK_CHECK(K >= 0, "in_features must be >= 0, got " << K);
  SK_CHECK(x.dim() >= 1 && x.size(-1) == K, "x must have shape [..., " << K << "] (in_features), got " << x.sizes());
  check_tensor(indices, "indices", at::kInt, 2);
  const int64_t N = indices.size(0), field = bits == 3 ? 4 : bits, Wd = ceil_div(K, 32 / field);
  check_size(indices, "indices", 1, Wd);
  // the table-lookup kernel gathers 16 rows' words at int32 offsets (16 * Wd)
  SK_CHECK(Wd < (int64_t{1} << 25), "in_features=" << K << " is too large for the codebook kernels");
  check_tensor(codebook, "codebook", x.scalar_type(), 2);
  check_size(codebook, "codebook", 0, ceil_div(N, group_size));
  check_size(codebook, "codebook", 1, int64_t{1} << bits);
  return check_optional(bias, "bias", x.scalar_type(), N);
}

template <typename Args>
Args kernel_args(const at::Tensor& x2, const at::Tensor& idx, const at::Tensor& bias, at::Tensor& y, int64_t bits,
                 int64_t group_size) {
  Args a{};
  a.x = cdata<float>(x2);
  a.idx = reinterpret_cast<const uint32_t*>(idx.data_ptr<int32_t>());
  a.bias = cdata<float>(bias);
  a.y = y.data_ptr<float>();
  a.M = x2.size(0), a.N = idx.size(0), a.K = x2.size(1), a.Wd = idx.size(1), a.bits = bits;
  a.field = bits == 3 ? 4 : bits, a.group_size = group_size;
  a.nthreads = threads_for(checked_mul(checked_mul(a.M, a.N, "M * N"), a.K, "the work"), kSerialWork);
  return a;
}

// Runs a codebook kernel, then checks the index words it read.
template <typename Args>
void run_codebook_kernel(void (*fn)(const Args&), Args& a) {
  uint32_t words_or = 0;
  a.words_or = &words_or;
  if (a.M > 0 && a.N > 0) fn(a);
  check_index_words(words_or, a.bits, "indices");
}

// y.T, panel by panel: decoded weight rows times x2.T (plus bias) by PyTorch's GEMM.
at::Tensor decoded_panels(const at::Tensor& x2, const at::Tensor& idx, const at::Tensor& codebook,
                          const at::Tensor& bias, int64_t bits, int64_t group_size) {
  const int64_t N = idx.size(0), K = x2.size(1), M = x2.size(0), field = bits == 3 ? 4 : bits;
  at::Tensor out_t = new_tensor({N, M}, x2.options(), "the output");
  at::Tensor panel = at::empty({std::min(kPanelRows, N), K}, x2.options());
  const int nthreads = at::get_num_threads();
  uint32_t words_or = 0;
  const at::Tensor xt = x2.t();
  for (int64_t r0 = 0; r0 < N; r0 += kPanelRows) {
    const int64_t r1 = std::min(N, r0 + kPanelRows);
    at::Tensor w = panel.narrow(0, 0, r1 - r0);
    words_or |= codebook_decode(reinterpret_cast<const uint32_t*>(idx.data_ptr<int32_t>()) + r0 * idx.size(1),
                                idx.size(1), cdata<float>(codebook), bits, field, group_size, r0, r1 - r0, K,
                                w.data_ptr<float>(), nthreads);
    at::Tensor o = out_t.narrow(0, r0, r1 - r0);
    if (bias.defined())
      at::addmm_out(o, bias.narrow(0, r0, r1 - r0).unsqueeze(1), w, xt);
    else
      at::mm_out(o, w, xt);
  }
  check_index_words(words_or, bits, "indices");
  return out_t.t().contiguous();
}

at::Tensor codebook_linear_cpu(const at::Tensor& x, const at::Tensor& indices, const at::Tensor& codebook,
                               const std::optional<at::Tensor>& bias, int64_t K, int64_t bits, int64_t group_size) {
  const at::Tensor b = check_codebook(x, indices, codebook, bias, K, bits, group_size);
  if (!run_native(x.scalar_type() == at::kFloat, "codebook_linear", x)) {
    static const auto fallback = fallback_op<decltype(codebook_linear_cpu)>("sparsekit::_codebook_linear_fallback");
    return fallback.call(x, indices, codebook, bias, K, bits, group_size);
  }
  const int64_t N = indices.size(0);
  const at::Tensor x2 = as_matrix(x, K), idx = indices.contiguous(), cb = codebook.contiguous();
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const int64_t M = x2.size(0);
  if (M == 0 && bits == 3) check_index_words(index_words_or(idx), bits, "indices");  // no kernel reads them
  at::Tensor y;
  if (M >= dense_from_m(bits) && N > 0 && K > 0) {
    y = decoded_panels(x2, idx, cb, bc, bits, group_size);
  } else {
    y = new_tensor({M, N}, x.options(), "the output");
    auto a = kernel_args<CodebookLinearArgs>(x2, idx, bc, y, bits, group_size);
    a.codebook = cdata<float>(cb);
    run_codebook_kernel(kCodebookLinear.get(), a);
  }
  return y.view(linear_out_shape(x, N));
}

// The int8 option: the centroids quantized here per group (as reference.quantize_codebook_q8:
// scale = max |c| / 127, c / scale rounded to nearest even; entries past 2^bits repeat
// v & (2^bits - 1); a group with a non-finite centroid has scale NaN), the activations per row
// in the kernel, exact int32 sums.
at::Tensor codebook_linear_q8_cpu(const at::Tensor& x, const at::Tensor& indices, const at::Tensor& codebook,
                                  const std::optional<at::Tensor>& bias, int64_t K, int64_t bits,
                                  int64_t group_size) {
  const at::Tensor b = check_codebook(x, indices, codebook, bias, K, bits, group_size);
  if (!run_native(x.scalar_type() == at::kFloat, "codebook_linear_q8", x)) {
    static const auto fallback =
        fallback_op<decltype(codebook_linear_q8_cpu)>("sparsekit::_codebook_linear_q8_fallback");
    return fallback.call(x, indices, codebook, bias, K, bits, group_size);
  }
  const int64_t N = indices.size(0);
  const at::Tensor x2 = as_matrix(x, K), idx = indices.contiguous(), cb = codebook.contiguous();
  const at::Tensor bc = b.defined() ? b.contiguous() : b;
  const int64_t M = x2.size(0), G = cb.size(0), ncb = int64_t{1} << bits;
  if (M == 0 && bits == 3) check_index_words(index_words_or(idx), bits, "indices");
  at::Tensor y = new_tensor({M, N}, x.options(), "the output");
  std::vector<int8_t> q(static_cast<size_t>(G * 16));
  std::vector<float> cscale(static_cast<size_t>(G));
  const float* cbp = cdata<float>(cb);
  for (int64_t g = 0; g < G; ++g) {
    const float* c = cbp + g * ncb;
    float amax = 0.f;
    bool finite = true;
    for (int64_t v = 0; v < ncb; ++v) {
      const float a = std::fabs(c[v]);
      finite = finite && a <= std::numeric_limits<float>::max();  // false for Inf and NaN
      amax = std::max(amax, a);
    }
    const float scale = finite ? amax / 127.f : std::numeric_limits<float>::quiet_NaN();
    cscale[g] = scale;
    for (int64_t v = 0; v < 16; ++v) {
      const float r = scale > 0.f ? std::nearbyint(c[v & (ncb - 1)] / scale) : 0.f;
      q[g * 16 + v] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, r)));
    }
  }
  auto a = kernel_args<CodebookQ8Args>(x2, idx, bc, y, bits, group_size);
  a.qcodebook = q.data();
  a.cscale = cscale.data();
  run_codebook_kernel(kCodebookQ8.get(), a);
  return y.view(linear_out_shape(x, N));
}

// The float rows row0 .. row0 + rows - 1 of a codebook weight (indices holds those rows): the op
// _codebook_decode, native-only.
at::Tensor codebook_decode_op(const at::Tensor& indices, const at::Tensor& codebook, int64_t K, int64_t bits,
                              int64_t group_size, int64_t row0) {
  check_bits(bits, group_size);
  check_tensor(indices, "indices", at::kInt, 2);
  check_tensor(codebook, "codebook", at::kFloat, 2);
  SK_CHECK(K >= 0 && row0 >= 0, "in_features and row0 must be >= 0, got " << K << ", " << row0);
  const int64_t rows = indices.size(0), field = bits == 3 ? 4 : bits;
  check_size(indices, "indices", 1, ceil_div(K, 32 / field));
  check_size(codebook, "codebook", 1, int64_t{1} << bits);
  const int64_t end = checked_add(row0, rows, "row0 + rows");  // every row index below fits
  SK_CHECK(rows == 0 || (end - 1) / group_size < codebook.size(0),
           "codebook has " << codebook.size(0) << " groups, rows up to " << end << " need "
                           << (end - 1) / group_size + 1);
  const at::Tensor idx = indices.contiguous(), cb = codebook.contiguous();
  at::Tensor out = new_tensor({rows, K}, codebook.options(), "the decoded rows");
  const uint32_t words_or =
      codebook_decode(reinterpret_cast<const uint32_t*>(idx.data_ptr<int32_t>()), idx.size(1), cdata<float>(cb), bits,
                      field, group_size, row0, rows, K, out.data_ptr<float>(), at::get_num_threads());
  check_index_words(words_or, bits, "indices");
  return out;
}

using CodebookSig = decltype(codebook_linear_cpu);

// Autograd of the exact op: x (through the dense weight), the centroids (a centroid's gradient
// is the sum of its members' weight gradients, as in Deep Compression) and the bias; the indices
// are fixed. The two gradient formulas are ops of their own (sparsekit/codebook/op.py).
class CodebookLinearFunction : public torch::autograd::Function<CodebookLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& indices,
                            const at::Tensor& codebook, const std::optional<at::Tensor>& bias, int64_t K, int64_t bits,
                            int64_t group_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = op_handle<CodebookSig>("sparsekit::codebook_linear");
    ctx->save_for_backward({x, indices, codebook});
    ctx->saved_data["K"] = K;
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return op.call(x, indices, codebook, bias, K, bits, group_size);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    using GradInput = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t);
    using GradCodebook = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    int64_t, int64_t, int64_t);
    static const auto grad_input = op_handle<GradInput>("sparsekit::codebook_linear_grad_input");
    static const auto grad_codebook = op_handle<GradCodebook>("sparsekit::codebook_linear_grad_codebook");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &indices = saved[1], &codebook = saved[2];
    const int64_t K = ctx->saved_data["K"].toInt(), bits = ctx->saved_data["bits"].toInt();
    const int64_t group_size = ctx->saved_data["group_size"].toInt();
    at::Tensor gx, gc, gb;
    if (ctx->needs_input_grad(0)) gx = grad_input.call(grads[0], indices, codebook, K, bits, group_size).reshape(x.sizes());
    if (ctx->needs_input_grad(2)) gc = grad_codebook.call(grads[0], x, indices, codebook, K, bits, group_size);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3))
      gb = grads[0].reshape({-1, indices.size(0)}).sum(0);
    return {gx, at::Tensor(), gc, gb, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor codebook_linear_autograd(const at::Tensor& x, const at::Tensor& indices, const at::Tensor& codebook,
                                    const std::optional<at::Tensor>& bias, int64_t K, int64_t bits,
                                    int64_t group_size) {
  const at::Tensor none;
  if (!tracks_grad({&x, &codebook, bias.has_value() ? &*bias : &none})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = op_handle<CodebookSig>("sparsekit::codebook_linear");
    return op.call(x, indices, codebook, bias, K, bits, group_size);
  }
  return CodebookLinearFunction::apply(x, indices, codebook, bias, K, bits, group_size);
}

}  // namespace
}  // namespace sk

TORCH_LIBRARY_FRAGMENT(sparsekit, m) {
  // native-only, defined here with its kernel
  m.def("_codebook_decode(Tensor indices, Tensor codebook, int in_features, int bits, int group_size, "
        "int row0) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) {
  m.impl("codebook_linear", &sk::codebook_linear_cpu);
  m.impl("codebook_linear_q8", &sk::codebook_linear_q8_cpu);
  m.impl("_codebook_decode", &sk::codebook_decode_op);
}

TORCH_LIBRARY_IMPL(sparsekit, Autograd, m) { m.impl("codebook_linear", &sk::codebook_linear_autograd); }
