// sparsekit::dwsep_conv2d on the CPU: argument checks, the fused kernel (one per instruction set,
// picked at run time) and its registration with PyTorch's dispatcher. Schema, fake and the
// Python kernels: sparsekit/dwsep/op.py. fp32, NCHW or channels_last memory (other strides are
// made contiguous first); the output has the memory format of the input.
//
// In channels_last the pointwise product reads the weight transposed, in panels of 64 output
// channels ([ceil(C_out / 64), C, 64]): the kernel makes that copy on each call, unless the
// caller passes it (pw_panels: DepthwiseSeparableConv2d keeps its own, since the copy moves the
// whole weight again).
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/conv.h"
#include "common/isa.h"
#include "common/tensor.h"
#include "dwsep/args.h"

namespace sk {
namespace {

const IsaKernels<void (*)(const DwsepArgs&)> kDwsep{portable::dwsep_conv2d, avx2::dwsep_conv2d, avx512::dwsep_conv2d};

// multiply-adds under which one thread runs the call
constexpr int64_t kSerialWork = 1 << 17;

at::Tensor dwsep_conv2d_cpu(const at::Tensor& x, const at::Tensor& dw_weight, const std::optional<at::Tensor>& dw_bias,
                            const at::Tensor& pw_weight, const std::optional<at::Tensor>& pw_bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t act1,
                            int64_t act2, const std::optional<at::Tensor>& pw_panels) {
  check_input(x, 4);
  const int64_t C = x.size(1);
  check_tensor(dw_weight, "dw_weight", x.scalar_type(), 4);
  SK_CHECK(dw_weight.size(0) == C && dw_weight.size(1) == 1,
           "dw_weight must have shape [" << C << ", 1, kh, kw] (C = x.shape[1]), got " << dw_weight.sizes());
  check_tensor(pw_weight, "pw_weight", x.scalar_type(), 4);
  const int64_t Co = pw_weight.size(0);
  SK_CHECK(pw_weight.size(1) == C && pw_weight.size(2) == 1 && pw_weight.size(3) == 1,
           "pw_weight must have shape [" << Co << ", " << C << ", 1, 1], got " << pw_weight.sizes());
  const at::Tensor bd = check_optional(dw_bias, "dw_bias", x.scalar_type(), C);
  const at::Tensor bp = check_optional(pw_bias, "pw_bias", x.scalar_type(), Co);
  SK_CHECK(act1 >= 0 && act1 <= 3, "act1 must be an activation code in 0..3 (identity, relu, relu6, silu), got "
                                        << act1);
  SK_CHECK(act2 >= 0 && act2 <= 3, "act2 must be an activation code in 0..3 (identity, relu, relu6, silu), got "
                                        << act2);
  const int64_t kernel[2] = {dw_weight.size(2), dw_weight.size(3)};
  const ConvGeometry g = conv_geometry(x, kernel, stride, padding, dilation);
  if (!run_native(x.scalar_type() == at::kFloat, "dwsep_conv2d", x)) {
    static const auto fallback = fallback_op<decltype(dwsep_conv2d_cpu)>("sparsekit::_dwsep_conv2d_fallback");
    return fallback.call(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, act1, act2, pw_panels);
  }
  const bool nhwc = is_channels_last(x);
  const at::Tensor xm = nhwc ? x : x.contiguous();
  at::Tensor y = new_tensor({g.N, Co, g.OH, g.OW}, x.options(), "the output",
                            nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const at::Tensor wd = dw_weight.contiguous(), wp = pw_weight.contiguous();
  const at::Tensor bdc = bd.defined() ? bd.contiguous() : bd, bpc = bp.defined() ? bp.contiguous() : bp;
  at::Tensor panels;
  if (nhwc && pw_panels.has_value() && pw_panels->defined()) {  // the pointwise weight in panels, kept by the caller
    panels = *pw_panels;
    check_tensor(panels, "pw_panels", at::kFloat, 3);
    check_size(panels, "pw_panels", 0, ceil_div(Co, 64));
    check_size(panels, "pw_panels", 1, C);
    check_size(panels, "pw_panels", 2, 64);
    panels = panels.contiguous();
  }
  DwsepArgs a{};
  a.N = g.N, a.C = C, a.H = g.H, a.W = g.W, a.Co = Co;
  a.kh = g.kh, a.kw = g.kw, a.sh = g.sh, a.sw = g.sw, a.ph = g.ph, a.pw = g.pw, a.dh = g.dh, a.dw = g.dw;
  a.OH = g.OH, a.OW = g.OW;
  a.x = cdata<float>(xm);
  a.wd = cdata<float>(wd);
  a.bd = cdata<float>(bdc);
  a.wp = cdata<float>(wp);
  a.bp = cdata<float>(bpc);
  a.wpt = panels.defined() ? cdata<float>(panels) : nullptr;
  a.y = y.data_ptr<float>();
  a.act1 = static_cast<int>(act1), a.act2 = static_cast<int>(act2), a.nhwc = nhwc;
  const int64_t work = checked_mul(checked_mul(g.out_pixels, checked_add(Co, g.taps, "Co + taps"), "the work"), C,
                                   "the work");
  a.nthreads = threads_for(work, kSerialWork);
  if (g.out_pixels > 0 && Co > 0) kDwsep.get()(a);
  return y;
}

}  // namespace
}  // namespace sk

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) { m.impl("dwsep_conv2d", &sk::dwsep_conv2d_cpu); }
