// The geometry of a 2-D convolution (binary_conv2d, dwsep_conv2d): checked once, before any use.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace sk {

// From x [N, C, H, W] (logical sizes, whatever its memory format) and the per-axis kernel,
// stride, padding and dilation. Every product and sum the kernels form from it fits in int64:
// H + 2 * ph, dh * (kh - 1), kh * kw and the pixel counts below (an input or output pixel's
// offset is then at most such a sum).
struct ConvGeometry {
  int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  int64_t taps;        // kh * kw
  int64_t in_pixels;   // N * H * W
  int64_t out_pixels;  // N * OH * OW
};

inline ConvGeometry conv_geometry(const at::Tensor& x, at::IntArrayRef kernel, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  SK_CHECK(x.dim() == 4, "x must have 4 dimensions [N, C, H, W], got " << x.dim());
  const struct {
    const char* name;
    at::IntArrayRef v;
    int64_t low;
  } args[] = {{"kernel_size", kernel, 1}, {"stride", stride, 1}, {"padding", padding, 0}, {"dilation", dilation, 1}};
  for (const auto& a : args)
    SK_CHECK(a.v.size() == 2 && a.v[0] >= a.low && a.v[1] >= a.low,
             a.name << " must be two ints >= " << a.low << ", got " << a.v);
  ConvGeometry g{};
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
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

// Whether x's memory is channels_last ([N, H, W, C] contiguous) rather than NCHW.
inline bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace sk
