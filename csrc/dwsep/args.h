// The plain argument struct of the dwsep kernels, shared by the registration (register.cpp)
// and the per-ISA kernel files. No inline functions here: this header is compiled under several
// instruction-set targets, and an inline function emitted under AVX-512 could be picked by the
// linker for every caller.
#pragma once
#include <cstdint>

#include "common/per_isa.h"

namespace sk {

// Depthwise kh x kw convolution (groups = C) -> act1 -> pointwise 1 x 1 convolution -> act2
// (act: 0 identity, 1 ReLU, 2 ReLU6, 3 SiLU), fp32. x [N, C, H, W] and y [N, Co, OH, OW], or
// both channels_last ([N, H, W, C] and [N, OH, OW, Co] in memory) with nhwc.
struct DwsepArgs {
  const float* x;
  const float* wd;  // [C, kh * kw]
  const float* bd;  // [C] or nullptr
  const float* wp;  // [Co, C]
  const float* bp;  // [Co] or nullptr
  const float* wpt;  // channels_last: wp transposed into panels of 64 output channels,
                     // [ceil(Co / 64)][C][64] (zero past Co), or nullptr for the kernel to do it
  float* y;
  int64_t N, C, H, W, Co, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  int act1, act2;
  bool nhwc;
  int nthreads;
};

// Entry points of the depthwise-separable kernel (dwsep/kernel.h), one definition per instruction
// set.
SK_DECLARE_PER_ISA(void dwsep_conv2d(const DwsepArgs& a);)

}  // namespace sk
