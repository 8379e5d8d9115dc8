// What every op's registration (<format>/register.cpp) uses between PyTorch tensors and the
// kernels' plain argument structs: tensor checks (TypeError for a dtype, ValueError for the
// rest, each naming the argument), contiguous data pointers, the thread count policy and the
// switch that sends a call to the Python kernels (reference, Triton under the interpreter).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string>

#include "common/checks.h"
#include "common/kernel_prelude.h"

namespace sk {

// A dtype as PyTorch's Python side names it (float32, int64, ...), for messages.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kShort: return "int16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

// TypeError unless t has this dtype; ValueError unless it has `dim` dimensions (-1: any) and
// lives on the CPU. The messages are those of sparsekit/_checks.py (the Python kernels' checks).
inline void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim = -1) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype_name(dtype), ", got ",
                   dtype_name(t.scalar_type()));
  SK_CHECK(dim < 0 || t.dim() == dim, name << " must have " << dim << " dimensions, got shape " << t.sizes());
  SK_CHECK(t.device().is_cpu(), name << " must be on cpu (the device of the input), got " << t.device());
}

// ValueError unless t.size(d) == want ("b must have shape [2, 2], got [2, 3]").
inline void check_size(const at::Tensor& t, const char* name, int64_t d, int64_t want) {
  if (t.size(d) == want) return;
  std::vector<int64_t> expected(t.sizes().begin(), t.sizes().end());
  expected[d] = want;
  SK_CHECK(false, name << " must have shape " << c10::IntArrayRef(expected) << ", got " << t.sizes());
}

// TypeError unless t (a weight) has the dtype of x.
inline void check_dtype_of_x(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have the dtype of x (",
                   dtype_name(x.scalar_type()), "), got ", dtype_name(t.scalar_type()));
}

// An op's input x: a floating dtype (TypeError otherwise), `dim` dimensions (-1: any), on the CPU.
inline void check_input(const at::Tensor& x, int64_t dim = -1) {
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()),
                   "x must have dtype float32 or float16 or bfloat16 or float64, got ", dtype_name(x.scalar_type()));
  check_tensor(x, "x", x.scalar_type(), dim);
}

// The optional 1-D tensor (bias, scales) of n elements of dtype, or an undefined tensor.
inline at::Tensor check_optional(const std::optional<at::Tensor>& t, const char* name, at::ScalarType dtype,
                                 int64_t n) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  check_tensor(*t, name, dtype, 1);
  check_size(*t, name, 0, n);
  return *t;
}

// A contiguous tensor's data for a kernel (t.contiguous() is t itself when already contiguous).
template <typename T>
inline const T* cdata(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}

// Threads for a kernel call: PyTorch's setting (torch.set_num_threads), but one thread when the
// call does under `serial_work` units of work, where waking a second thread costs more than it
// saves (the policy lives here, next to the kernels, not in Python).
inline int threads_for(int64_t work, int64_t serial_work) {
  const int n = at::get_num_threads();
  if (work < serial_work) return 1;
  return n < 1 ? 1 : n > kMaxThreads ? kMaxThreads : n;
}

// ---- Where a CPU call runs
// sparsekit.set_backend sets this through the op sparsekit::_set_cpu_backend: "auto" runs the
// native kernel for float32 and the Python fallback (the reference) for other dtypes; "cpu" runs
// the native kernel and raises TypeError for other dtypes; any other backend ("reference",
// "triton" under TRITON_INTERPRET=1, a forced GPU backend's error) is the Python fallback's to run.
enum class CpuBackend : int { automatic = 0, native = 1, python = 2 };
CpuBackend cpu_backend();

// Whether this CPU call runs the native kernel (fp32: whether the inputs are float32).
inline bool run_native(bool fp32, const char* op, const at::Tensor& x) {
  switch (cpu_backend()) {
    case CpuBackend::automatic: return fp32;
    case CpuBackend::native:
      TORCH_CHECK_TYPE(fp32, op, ": the cpu backend runs float32 only, got x ", dtype_name(x.scalar_type()));
      return true;
    default: return false;
  }
}

// The Python fallback `sparsekit::_<op>_fallback` of an op (same schema, defined with the op in
// sparsekit/<format>/op.py, see sparsekit/backend.py): the kernels that live in Python (the
// reference, Triton) run through it when run_native says so. Looked up once per op, on first use.
template <typename Sig>
inline c10::TypedOperatorHandle<Sig> fallback_op(const char* qualified_fallback_name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified_fallback_name, "").template typed<Sig>();
}

// An op by name, for calls from C++ (autograd formulas).
template <typename Sig>
inline c10::TypedOperatorHandle<Sig> op_handle(const char* qualified_name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").template typed<Sig>();
}

// A new tensor for an op's result or workspace: its size is checked (overflow-safe, and at most
// this machine's memory, as scratch_bytes) before anything is allocated, so absurd arguments give
// ValueError naming `what`, never an allocator error or a huge lazy allocation.
inline at::Tensor new_tensor(at::IntArrayRef sizes, const at::TensorOptions& options, const char* what,
                             at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  int64_t n = 1;
  for (int64_t s : sizes) n = checked_mul(n, s, what);
  scratch_bytes(n, static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype()))), what);
  return at::empty(sizes, options.memory_format(format));
}

// x [..., K] as a contiguous [rows, K] matrix (a view when it already is one; K may be 0).
inline at::Tensor as_matrix(const at::Tensor& x, int64_t K) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);  // fits: x exists
  return x.reshape({rows, K}).contiguous();
}

// Whether autograd records a call with these tensors: gradients are on and one of them needs a
// gradient. An inference tensor (made under torch.inference_mode) never gets one, since autograd
// refuses to save it: a model built under inference_mode and called with gradients on runs as
// nn.Linear does for an input that needs no gradient. The autograd kernels call the op straight
// below autograd otherwise, without making a graph node.
inline bool tracks_grad(std::initializer_list<const at::Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : ts)
    if (t->defined() && t->requires_grad() && !t->is_inference()) return true;
  return false;
}

// The output shape of a linear op: x's leading dimensions, then n.
inline std::vector<int64_t> linear_out_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end() - 1);
  s.push_back(n);
  return s;
}

}  // namespace sk
