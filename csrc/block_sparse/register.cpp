// sparsekit::bsr_linear on the CPU: argument checks, the kernel (one per instruction set, picked
// at run time), its autograd formula, and their registration with PyTorch's dispatcher. The
// schemas, the fakes and the kernels that live in Python (reference, Triton, the helper ops of
// the backward pass: bsr_sddmm, bsr_transpose) are in sparsekit/block_sparse/op.py.
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "block_sparse/args.h"
#include "block_sparse/nonfinite.h"
#include "common/isa.h"
#include "common/tensor.h"

namespace sk {
namespace {

const IsaKernels<void (*)(const BsrLinearArgs&)> kBsrLinear{portable::bsr_linear, avx2::bsr_linear,
                                                             avx512::bsr_linear};

// M at or below which the kernel streams each weight row once (memory bound); above it, packed
// activation panels and a register-blocked micro-kernel (block_sparse/kernel.h).
constexpr int64_t kSmallM = 24;
// Stored weights times rows under which one thread runs the call: waking a second costs more
// (a 384 x 384 layer at 10% density and M = 1 is 15k).
constexpr int64_t kSerialWork = 1 << 16;

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

at::Tensor bsr_linear_cpu(const at::Tensor& x, const at::Tensor& values, const at::Tensor& col_indices,
                          const at::Tensor& row_offsets, const std::optional<at::Tensor>& bias, int64_t N,
                          int64_t K) {
  check_input(x);
  check_dtype_of_x(values, "values", x);
  check_tensor(values, "values", x.scalar_type(), 3);
  check_tensor(col_indices, "col_indices", at::kInt, 1);
  check_tensor(row_offsets, "row_offsets", at::kInt, 1);
  SK_CHECK(N >= 0 && K >= 0, "out_features and in_features must be >= 0, got " << N << ", " << K);
  SK_CHECK(x.dim() >= 1 && x.size(-1) == K,
           "x must have shape [..., " << K << "] (in_features), got " << x.sizes());
  const int64_t nnz = values.size(0), bh = values.size(1), bw = values.size(2);
  SK_CHECK(bh >= 1 && bw >= 1, "values must hold blocks of positive size, got " << bh << " x " << bw);
  const int64_t Nb = ceil_div(N, bh), Kb = ceil_div(K, bw);
  check_size(col_indices, "col_indices", 0, nnz);
  check_size(row_offsets, "row_offsets", 0, checked_add(Nb, 1, "ceil(N / bh) + 1 row offsets"));
  const at::Tensor b = check_optional(bias, "bias", x.scalar_type(), N);
  if (!run_native(x.scalar_type() == at::kFloat, "bsr_linear", x)) {
    static const auto fallback = fallback_op<decltype(bsr_linear_cpu)>("sparsekit::_bsr_linear_fallback");
    return fallback.call(x, values, col_indices, row_offsets, bias, N, K);
  }
  const at::Tensor ci = col_indices.contiguous(), ro = row_offsets.contiguous();
  check_bsr_indices(cdata<int32_t>(ro), Nb, cdata<int32_t>(ci), nnz, Kb);
  const at::Tensor x2 = as_matrix(x, K), v = values.contiguous(), bc = b.defined() ? b.contiguous() : b;
  const int64_t M = x2.size(0);
  at::Tensor y = new_tensor({M, N}, x.options(), "the output");
  if (M > 0 && N > 0 && K == 0) {  // no inputs: the output is the bias (x's data may be null)
    if (bc.defined())
      y.copy_(bc.unsqueeze(0).expand({M, N}));
    else
      y.zero_();
  } else if (M > 0 && N > 0) {
    BsrLinearArgs a{};
    a.x = cdata<float>(x2);
    a.values = cdata<float>(v);
    a.cols = cdata<int32_t>(ci);
    a.row_off = cdata<int32_t>(ro);
    a.bias = cdata<float>(bc);
    a.y = y.data_ptr<float>();
    a.M = M, a.N = N, a.K = K, a.bh = bh, a.bw = bw, a.Nb = Nb, a.Kb = Kb;
    a.small_m = kSmallM;
    a.nthreads = threads_for(checked_mul(checked_mul(nnz, bh * bw, "stored weights"), M, "the work"), kSerialWork);
    // the kernel's workspace: x padded to whole blocks (small M), or per thread a packed panel
    // of kBsrPanel rows and its transposed output (large M)
    const int64_t Kp = checked_mul(Kb, bw, "in_features padded to whole blocks");
    const int64_t Np = checked_mul(Nb, bh, "out_features padded to whole blocks");
    const int64_t work = M <= kSmallM ? checked_mul(M, Kp, "the padded activations")
                                      : checked_mul(checked_mul(checked_add(Kp, Np, "the panel workspace"), kBsrPanel,
                                                                "the panel workspace"),
                                                    a.nthreads, "the panel workspace of every thread");
    a.work = static_cast<float*>(thread_scratch(scratch_bytes(checked_add(work, 1, "bsr_linear's workspace"),
                                                              sizeof(float), "bsr_linear's workspace"), 7));
    kBsrLinear.get()(a);
    bsr_propagate_nonfinite(a.x, M, K, a.cols, a.row_off, Nb, Kb, bh, bw, a.y, N, a.nthreads);
  }
  return y.view(linear_out_shape(x, N));
}

// Autograd: grad_x is the block-sparse product with W.T (bsr_transpose, then bsr_linear);
// grad_values is computed for the stored blocks only (bsr_sddmm), so pruned models fine-tune in
// the sparse format; grad_bias sums grad_out over its rows.
class BsrLinearFunction : public torch::autograd::Function<BsrLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& values,
                            const at::Tensor& col_indices, const at::Tensor& row_offsets,
                            const std::optional<at::Tensor>& bias, int64_t N, int64_t K) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = op_handle<decltype(bsr_linear_cpu)>("sparsekit::bsr_linear");
    ctx->save_for_backward({x, values, col_indices, row_offsets});
    ctx->saved_data["N"] = N;
    ctx->saved_data["K"] = K;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return op.call(x, values, col_indices, row_offsets, bias, N, K);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    using Transpose = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                     const at::Tensor&, int64_t, int64_t);
    using Sddmm = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                             int64_t);
    static const auto linear = op_handle<decltype(bsr_linear_cpu)>("sparsekit::bsr_linear");
    static const auto transpose = op_handle<Transpose>("sparsekit::bsr_transpose");
    static const auto sddmm = op_handle<Sddmm>("sparsekit::bsr_sddmm");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &values = saved[1], &cols = saved[2], &row_off = saved[3];
    const int64_t N = ctx->saved_data["N"].toInt(), K = ctx->saved_data["K"].toInt();
    const at::Tensor g2 = grads[0].reshape({-1, N});
    at::Tensor grad_x, grad_values, grad_bias;
    if (ctx->needs_input_grad(0)) {
      auto [vt, ct, rt] = transpose.call(values, cols, row_off, N, K);
      grad_x = linear.call(grads[0], vt, ct, rt, std::nullopt, K, N);
    }
    if (ctx->needs_input_grad(1))
      grad_values = sddmm.call(g2, x.reshape({-1, K}), cols, row_off, values.size(1), values.size(2));
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(4)) grad_bias = g2.sum(0);
    return {grad_x, grad_values, at::Tensor(), at::Tensor(), grad_bias, at::Tensor(), at::Tensor()};
  }
};

at::Tensor bsr_linear_autograd(const at::Tensor& x, const at::Tensor& values, const at::Tensor& col_indices,
                               const at::Tensor& row_offsets, const std::optional<at::Tensor>& bias, int64_t N,
                               int64_t K) {
  const at::Tensor none;
  if (!tracks_grad({&x, &values, bias.has_value() ? &*bias : &none})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = op_handle<decltype(bsr_linear_cpu)>("sparsekit::bsr_linear");
    return op.call(x, values, col_indices, row_offsets, bias, N, K);
  }
  return BsrLinearFunction::apply(x, values, col_indices, row_offsets, bias, N, K);
}

}  // namespace
}  // namespace sk

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) { m.impl("bsr_linear", &sk::bsr_linear_cpu); }

TORCH_LIBRARY_IMPL(sparsekit, Autograd, m) { m.impl("bsr_linear", &sk::bsr_linear_autograd); }
