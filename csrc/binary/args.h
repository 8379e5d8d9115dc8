// The plain argument structs of the binary kernels, shared by the registration (register.cpp)
// and the per-ISA kernel files. No inline functions here: this header is compiled under several
// instruction-set targets, and an inline function emitted under AVX-512 could be picked by the
// linker for every caller.
#pragma once
#include <cstdint>

#include "common/per_isa.h"

namespace sk {

// out[m, n] = sum_k a[m, k] * b[n, k] for +-1 vectors packed one bit per element
// (bit 1 = +1) into 64-bit words along K: K - 2 * popcount(a[m] ^ b[n]).
// With out_f set, the result goes out as float with a fused epilogue instead:
// out_f[m, n] = dot * col_scale[n] * (row_scale ? row_scale[m] : 1) + (bias ? bias[n] : 0).
struct XnorGemmArgs {
  const uint64_t* a;  // [M, W]
  const uint64_t* b;  // [N, W]
  int32_t* out;       // [M, N], or nullptr when out_f is set
  int64_t M, N, W, K;
  int64_t last_bits;  // bits of each row's last word that hold elements (1..64); the rest are masked
  int nthreads;
  float* out_f;
  const float* col_scale;  // [N]
  const float* row_scale;  // [M] or nullptr
  const float* bias;       // [N] or nullptr
  // > 0: out_f is an NCHW image batch instead of [M, N]: row m is pixel m % out_hw of
  // image m / out_hw, column n its channel (the layout of a convolution's output).
  int64_t out_hw;
};

// BinaryConnect: y[m, n] = scale[n] * sum_k x[m, k] * s[n, k] + bias[n], with s the +-1
// weight signs packed 64 per word (bit 1 = +1) and x real.
struct SignLinearArgs {
  const float* x;        // [M, K]
  const uint64_t* w;     // [N, W]
  const float* scale;    // [N]
  const float* bias;     // [N] or nullptr
  float* y;              // [M, N]
  int64_t M, N, K, W;
  int nthreads;
};

// out[r, :] = the signs of x[r, :] packed 64 per word (bit 1 where x >= 0, zero padding);
// with scale set, scale[r] = mean |x[r, :]| (the XNOR-Net activation scale).
struct PackSignsArgs {
  const float* x;  // [R, K]
  uint64_t* out;   // [R, W]
  float* scale;    // [R] or nullptr
  int64_t R, K, W;
  int nthreads;
};

// Word im2col of a binarized NCHW image batch: each pixel's channels packed 64 per word (bit 1
// where x >= 0, as pack_signs) into pix, then out[r] = the words of output pixel r's receptive
// field in kernel order (kh, kw), padding pixels as +1 (all valid channel bits set), and zero
// words up to row_words.
struct ConvIm2colArgs {
  const float* x;  // [N, C, H, W], or [N, H, W, C] with nhwc (a channels_last tensor's memory)
  uint64_t* pix;   // scratch [N * H * W, Wc]
  uint64_t* out;   // [N * OH * OW, row_words]
  int64_t N, C, H, W, Wc;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
  int64_t row_words;  // >= kh * kw * Wc
  bool nhwc;
  int nthreads;
};

// Entry points of the binary kernels (binary/kernel.h; the XNOR GEMM also in
// binary/kernel_avx512vp.cpp and binary/kernel_amx.cpp), one definition per instruction set.
SK_DECLARE_PER_ISA(void xnor_gemm(const XnorGemmArgs& a);
    void pack_signs(const PackSignsArgs& a);
    void sign_linear(const SignLinearArgs& a);
    void conv_im2col(const ConvIm2colArgs& a);)
namespace avx512vp {
void xnor_gemm(const XnorGemmArgs& a);
}
namespace amx {
void xnor_gemm(const XnorGemmArgs& a);
bool takes(int64_t M, int64_t N, bool conv_out, int nthreads);  // whether xnor_gemm runs on the tiles
}

}  // namespace sk
