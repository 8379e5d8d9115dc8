// Plain argument structs shared by the dispatcher and the per-ISA kernel files.
// This header must stay free of inline functions: it is compiled under several
// instruction-set targets, and an inline function emitted under AVX-512 could be
// picked by the linker for every caller.
#pragma once
#include <cstdint>

namespace sk {

// y[M, N] = x[M, K] @ W.T (+ bias), W stored as BSR with blocks of bh x bw.
constexpr int64_t kBsrPanel = 64;  // activation rows per packed panel (large-M path)

struct BsrLinearArgs {
  const float* x;          // [M, K], row-major
  const float* values;     // [nnz, bh, bw]
  const int32_t* cols;     // [nnz] block-column index of each block
  const int32_t* row_off;  // [Nb + 1]
  const float* bias;       // [N] or nullptr
  float* y;                // [M, N], row-major
  float* work;             // scratch: M*Kp floats if M <= small_m, else (Kp + Np)*kBsrPanel*nthreads
  int64_t M, N, K;
  int64_t bh, bw, Nb, Kb;
  int64_t small_m;         // M <= small_m takes the memory-bound path
  int nthreads;
};

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

// y[m, n] = sum_k x[m, k] * codebook[n / group_size][idx(n, k)] + bias[n], idx(n, k) the field
// of `field` bits (bits rounded up to 1, 2 or 4) at position k % (32 / field) of word
// k / (32 / field) of row n. A 3-bit index >= 8 is invalid: the kernel reads its field's low 3
// bits (staying inside the codebook) and reports every index word it read through words_or, which
// the caller checks after the call (no second pass over the indices).
struct CodebookLinearArgs {
  const float* x;         // [M, K]
  const uint32_t* idx;    // [N, Wd]
  const float* codebook;  // [ceil(N / group_size), 2^bits]
  const float* bias;      // [N] or nullptr
  float* y;               // [M, N]
  int64_t M, N, K, Wd, bits, field, group_size;
  int nthreads;
  uint32_t* words_or;     // out: the bitwise OR of every index word read (left alone when M or N is 0)
};

// The int8 option of the codebook matmul: activations quantized per row to int8 (symmetric,
// scale max|x| / 127, round to nearest even), centroids given as int8 per codebook group
// (qcodebook[g][v] * cscale[g]), integer products summed exactly in int32:
// y[m, n] = xscale[m] * cscale[g(n)] * sum_k xq[m, k] * qcodebook[g(n)][idx(n, k)] + bias[n].
struct CodebookQ8Args {
  const float* x;           // [M, K]
  const uint32_t* idx;      // [N, Wd], as CodebookLinearArgs
  const int8_t* qcodebook;  // [G, 16]: entries past 2^bits repeat entry v & (2^bits - 1)
  const float* cscale;      // [G]
  const float* bias;        // [N] or nullptr
  float* y;                 // [M, N]
  int64_t M, N, K, Wd, bits, field, group_size;
  int nthreads;
  uint32_t* words_or;       // out: as CodebookLinearArgs
};

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

}  // namespace sk
