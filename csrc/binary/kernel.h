// XNOR-popcount GEMM on bit-packed +-1 vectors, written once and compiled per ISA (see
// binary/kernel_<isa>.cpp: include only there, inside the ISA namespace). Scalar 64-bit popcount: the
// POPCNT instruction on AVX2/AVX-512 targets; binary/kernel_avx512vp.cpp has the VPOPCNTDQ variant.
//
// out[m, n] = K - 2 * popcount(a[m] ^ b[n]); the bits of the last word past K are masked
// off, so padding never counts, whatever it holds. Register tiles of TM rows of a x TN
// rows of b share every loaded word; threads split (row tile, column block) pairs statically.

#include "binary/rows.h"

#ifndef SK_XNOR_VECTOR_TILE  // binary/kernel_avx512vp.cpp defines its own VPOPCNTDQ tile first
template <int TM, int TN>
static inline void xnor_tile(const XnorGemmArgs& g, int64_t m0, int64_t n0) {
  const int64_t W = g.W;
  const uint64_t* A[TM];
  const uint64_t* B[TN];
  xnor_rows<TM, TN>(g, m0, n0, A, B);
  int64_t acc[TM][TN];
  SK_UNROLL
  for (int i = 0; i < TM; ++i)
    SK_UNROLL
    for (int j = 0; j < TN; ++j) acc[i][j] = 0;
  for (int64_t w = 0; w < W; ++w) {
    const uint64_t mask = w + 1 < W ? ~uint64_t(0) : low_bits_mask(g.last_bits);
    uint64_t bw[TN];
    SK_UNROLL
    for (int j = 0; j < TN; ++j) bw[j] = B[j][w];
    SK_UNROLL
    for (int i = 0; i < TM; ++i) {
      const uint64_t aw = A[i][w];
      SK_UNROLL
      for (int j = 0; j < TN; ++j) acc[i][j] += __builtin_popcountll((aw ^ bw[j]) & mask);
    }
  }
  SK_UNROLL
  for (int i = 0; i < TM; ++i)
    SK_UNROLL
    for (int j = 0; j < TN; ++j) xnor_store(g, m0 + i, n0 + j, g.K - 2 * acc[i][j]);
}
#endif

// Rows m0 .. m0+TM-1 of a against columns n0 .. n1-1 of the output.
template <int TM>
static inline void xnor_row_tile(const XnorGemmArgs& g, int64_t m0, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) xnor_tile<TM, 4>(g, m0, n);
  for (; n < n1; ++n) xnor_tile<TM, 1>(g, m0, n);
}

void xnor_gemm(const XnorGemmArgs& g) {
  if (g.M == 0 || g.N == 0) return;
  constexpr int64_t NB = 64;  // columns per block: NB rows of b stay in L1/L2 for a row tile
  const int64_t mt = (g.M + 3) / 4, nb = (g.N + NB - 1) / NB;
#pragma omp parallel for collapse(2) schedule(static) num_threads(g.nthreads)
  for (int64_t jb = 0; jb < nb; ++jb)
    for (int64_t it = 0; it < mt; ++it) {
      const int64_t m0 = it * 4, n0 = jb * NB, n1 = imin(g.N, n0 + NB);
      if (m0 + 4 <= g.M)
        xnor_row_tile<4>(g, m0, n0, n1);
      else
        for (int64_t m = m0; m < g.M; ++m) xnor_row_tile<1>(g, m, n0, n1);
    }
}

// Bit b of the result = (x[b] >= 0) for 64 floats: compare-to-mask on AVX-512, compare and
// movemask on AVX2, scalar otherwise (NaN packs as -1 everywhere).
static inline uint64_t sign_bits64(const float* x) {
#if SK_VW == 16  // the ISA files set SK_VW; GCC does not define __AVX512F__ for target pragmas in C++
  typedef float f16 __attribute__((vector_size(64)));
  typedef float f16u __attribute__((vector_size(64), aligned(4), may_alias));
  uint64_t bits = 0;
  SK_UNROLL
  for (int c = 0; c < 4; ++c) {
    const f16 v = *reinterpret_cast<const f16u*>(x + 16 * c);
    const uint64_t m = __builtin_ia32_cmpps512_mask(v, f16{}, 0x1d /* _CMP_GE_OQ */, 0xffff, 4);
    bits |= m << (16 * c);
  }
  return bits;
#elif SK_VW == 8
  typedef float f8 __attribute__((vector_size(32)));
  typedef float f8u __attribute__((vector_size(32), aligned(4), may_alias));
  typedef int i8 __attribute__((vector_size(32)));
  uint64_t bits = 0;
  SK_UNROLL
  for (int c = 0; c < 8; ++c) {
    const f8 v = *reinterpret_cast<const f8u*>(x + 8 * c);
    const i8 ge = v >= f8{};
    bits |= static_cast<uint64_t>(__builtin_ia32_movmskps256(reinterpret_cast<const f8&>(ge))) << (8 * c);
  }
  return bits;
#else
  uint64_t bits = 0;
  for (int b = 0; b < 64; ++b) bits |= static_cast<uint64_t>(x[b] >= 0.f) << b;
  return bits;
#endif
}

// Packs rows of x into sign words; rows split over threads.
void pack_signs(const PackSignsArgs& p) {
#pragma omp parallel for schedule(static) num_threads(p.nthreads)
  for (int64_t r = 0; r < p.R; ++r) {
    const float* x = p.x + r * p.K;
    uint64_t* out = p.out + r * p.W;
    float asum = 0.f;
    for (int64_t w = 0; w < p.W; ++w) {
      const int64_t k0 = w * 64, n = imin(64, p.K - k0);
      uint64_t bits = 0;
      if (n == 64) {
        bits = sign_bits64(x + k0);
      } else {
        for (int64_t b = 0; b < n; ++b) bits |= static_cast<uint64_t>(x[k0 + b] >= 0.f) << b;
      }
      out[w] = bits;
    }
    if (p.scale) {
      for (int64_t k = 0; k < p.K; ++k) asum += x[k] < 0.f ? -x[k] : x[k];
      p.scale[r] = p.K > 0 ? asum / static_cast<float>(p.K) : 0.f;
    }
  }
}

// Packs each pixel's channels of an NCHW batch: for a chunk of kPackChunk pixels and one word
// of channels, two 32-bit planes (channels 0-31 and 32-63 of the word) stay in L1 while every
// channel's contiguous values compare, SK_VW at a time, and set their bit; then the planes
// interleave into the pixels' words. Then gathers receptive fields word by word.
constexpr int64_t kPackChunk = 512;

void conv_im2col(const ConvIm2colArgs& a) {
  typedef Vec<SK_VW> V;
  typedef typename V::type vw;
  typedef int32_t viu __attribute__((vector_size(SK_VW * 4), aligned(4), may_alias));
  const int64_t HW = a.H * a.W, Wc = a.Wc, chunks = (HW + kPackChunk - 1) / kPackChunk;
  const int64_t rows = a.N * a.OH * a.OW, taps = a.kh * a.kw;
#pragma omp parallel num_threads(a.nthreads)
  {
    if (a.nhwc) {  // each pixel's channels are contiguous: pack them as rows
#pragma omp for schedule(static)
      for (int64_t p = 0; p < a.N * HW; ++p)
        for (int64_t w = 0; w < Wc; ++w) {
          const float* xs = a.x + p * a.C + 64 * w;
          const int64_t nc = imin(64, a.C - 64 * w);
          uint64_t bits = 0;
          if (nc == 64) {
            bits = sign_bits64(xs);
          } else {
            for (int64_t c = 0; c < nc; ++c) bits |= static_cast<uint64_t>(xs[c] >= 0.f) << c;
          }
          a.pix[p * Wc + w] = bits;
        }
    }
    alignas(64) uint32_t plane[2][kPackChunk];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < (a.nhwc ? 0 : a.N * chunks); ++b) {
      const int64_t n = b / chunks, p0 = (b % chunks) * kPackChunk, np = imin(kPackChunk, HW - p0);
      const int64_t nv = np - np % SK_VW;
      const float* xs = a.x + n * a.C * HW + p0;
      uint64_t* dst = a.pix + (n * HW + p0) * Wc;
      for (int64_t w = 0; w < Wc; ++w) {
        for (int64_t i = 0; i < np; ++i) plane[0][i] = plane[1][i] = 0;
        for (int64_t c = 64 * w; c < imin(a.C, 64 * w + 64); ++c) {
          uint32_t* pl = plane[(c >> 5) & 1];
          const int32_t bit = static_cast<int32_t>(1u << (c & 31));
          const float* xc = xs + c * HW;
          for (int64_t i = 0; i < nv; i += SK_VW)
            *reinterpret_cast<viu*>(pl + i) |= (V::load(xc + i) >= vw{}) & bit;
          for (int64_t i = nv; i < np; ++i) pl[i] |= xc[i] >= 0.f ? static_cast<uint32_t>(bit) : 0u;
        }
        for (int64_t i = 0; i < np; ++i) dst[i * Wc + w] = plane[0][i] | static_cast<uint64_t>(plane[1][i]) << 32;
      }
    }
    // (implicit barrier: every pixel is packed before any is gathered)
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / (a.OH * a.OW), oh = (r / a.OW) % a.OH, ow = r % a.OW;
      uint64_t* dst = a.out + r * a.row_words;
      for (int64_t t = 0; t < taps; ++t, dst += Wc) {
        const int64_t ih = oh * a.sh - a.ph + (t / a.kw) * a.dh, iw = ow * a.sw - a.pw + (t % a.kw) * a.dw;
        if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) {
          const uint64_t* src = a.pix + ((n * a.H + ih) * a.W + iw) * Wc;
          for (int64_t w = 0; w < Wc; ++w) dst[w] = src[w];
        } else {  // a zero-padding pixel binarizes to +1 in every channel
          for (int64_t w = 0; w < Wc; ++w) dst[w] = low_bits_mask(imin(64, a.C - 64 * w));
        }
      }
      for (int64_t w = taps * Wc; w < a.row_words; ++w) a.out[r * a.row_words + w] = 0;
    }
  }
}

#if SK_VW == 16
// BinaryConnect on AVX-512 by table lookup (common/lut.h): for every group of 4 activations of
// a row, the 16 signed sums +-x0 +-x1 +-x2 +-x3 form one table (the group's 4 weight bits are
// its index, bit 1 = +): 64 sign products per VPERMPS instead of 16 with masked adds. The int64
// words of the packed signs are read as pairs of little-endian 32-bit words. Elements past K
// have zero activations, so their bits add nothing whatever they hold.
#include "common/lut.h"

// tables[t * 16 + v] = sum_j (bit j of v ? +x : -x)[4t + j] for every group t of W * 64 elements
static void build_sign_tables(const float* x, int64_t K, int64_t groups, float* tables) {
  f16v bit[4];
  SK_UNROLL
  for (int j = 0; j < 4; ++j)
    SK_UNROLL
    for (int v = 0; v < 16; ++v) bit[j][v] = ((v >> j) & 1) ? 1.f : -1.f;
  for (int64_t t = 0; t < groups; ++t) {
    f16v acc = f16v{};
    SK_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int64_t k = 4 * t + j;
      acc += bit[j] * (k < K ? x[k] : 0.f);
    }
    *reinterpret_cast<f16u*>(tables + t * 16) = acc;
  }
}

void sign_linear(const SignLinearArgs& s) {
  if (s.M == 0 || s.N == 0) return;
  constexpr int64_t MC = 4;
  const int64_t groups = s.W * 16, tstride = groups * 16;  // floats of one row's tables
  float* tb = static_cast<float*>(thread_scratch(sizeof(float) * MC * tstride, 0));
  const int64_t tiles = (s.N + 15) / 16;
#pragma omp parallel num_threads(s.nthreads)
  for (int64_t m0 = 0; m0 < s.M; m0 += MC) {
    const int64_t mc = imin(MC, s.M - m0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < mc * 8; ++c) {  // each row's tables in 8 slices
      const int64_t m = c / 8, g0 = (c % 8) * groups / 8, g1 = (c % 8 + 1) * groups / 8;
      build_sign_tables(s.x + (m0 + m) * s.K + 4 * g0, s.K - 4 * g0, g1 - g0, tb + m * tstride + g0 * 16);
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t n0 = t * 16;
      const LutTile tile{reinterpret_cast<const uint32_t*>(s.w + n0 * s.W), 2 * s.W, 2 * s.W, tb, tstride,
                         imin(16, s.N - n0), s.scale + n0, s.bias ? s.bias + n0 : nullptr, s.y + m0 * s.N + n0,
                         s.N, nullptr};
      lut_tile_rows(tile, mc);
    }
  }
}

#else
// BinaryConnect: real activations times +-1 weights, y = scale * sum_k (bit k set ? x : -x)
// + bias. Each 16 weight bits become a lane mask choosing, per activation, x or -x. (Not
// 2 * sum_{bit set} x - sum x: that is Inf - Inf = NaN for an infinite x at a +1 weight, and
// overflows before the true sum does.) A tile of MC activation rows x NT weight rows keeps one
// accumulator per pair: every loaded activation vector serves NT weight rows, every mask MC
// activation rows.
template <int MC, int NT>
static void sign_linear_tile(const SignLinearArgs& s, int64_t m0, int64_t n0) {
  typedef Vec<SK_VW> V;
  typedef typename V::type vw;
  const int64_t K = s.K, Kv = K - K % 64;
  typedef int32_t vi __attribute__((vector_size(SK_VW * 4)));
  vi lane;
  SK_UNROLL
  for (int l = 0; l < SK_VW; ++l) lane[l] = 1 << l;
  vw acc[MC][NT];
  SK_UNROLL
  for (int m = 0; m < MC; ++m)
    SK_UNROLL
    for (int j = 0; j < NT; ++j) acc[m][j] = vw{};
  for (int64_t k0 = 0; k0 < Kv; k0 += 64) {
    uint64_t bits[NT];
    SK_UNROLL
    for (int j = 0; j < NT; ++j) bits[j] = s.w[(n0 + j) * s.W + k0 / 64];
    SK_UNROLL
    for (int c = 0; c < 64 / SK_VW; ++c) {
      vw xv[MC], nxv[MC];
      SK_UNROLL
      for (int m = 0; m < MC; ++m) {
        xv[m] = V::load(s.x + (m0 + m) * K + k0 + c * SK_VW);
        nxv[m] = -xv[m];
      }
      SK_UNROLL
      for (int j = 0; j < NT; ++j) {
        const vi sel = ((vi{} + static_cast<int32_t>((bits[j] >> (c * SK_VW)) & ((1u << SK_VW) - 1u))) & lane) != 0;
        SK_UNROLL
        for (int m = 0; m < MC; ++m) acc[m][j] += sel ? xv[m] : nxv[m];
      }
    }
  }
  SK_UNROLL
  for (int m = 0; m < MC; ++m)
    SK_UNROLL
    for (int j = 0; j < NT; ++j) {
      const int64_t n = n0 + j;
      float dot = V::sum(acc[m][j]);
      for (int64_t k = Kv; k < K; ++k) {
        const float v = s.x[(m0 + m) * K + k];
        dot += (s.w[n * s.W + k / 64] >> (k % 64)) & 1 ? v : -v;
      }
      s.y[(m0 + m) * s.N + n] = s.scale[n] * dot + (s.bias ? s.bias[n] : 0.f);
    }
}

// Rows m0 .. m0+MC-1 against every weight row, NT at a time (the weight rows split over threads).
template <int MC, int NT>
static void sign_linear_rows(const SignLinearArgs& s, int64_t m0) {
  const int64_t tiles = s.N / NT;
#pragma omp for schedule(static)
  for (int64_t t = 0; t <= tiles; ++t) {
    if (t < tiles)
      sign_linear_tile<MC, NT>(s, m0, t * NT);
    else
      for (int64_t n = tiles * NT; n < s.N; ++n) sign_linear_tile<MC, 1>(s, m0, n);
  }
}

void sign_linear(const SignLinearArgs& s) {
  if (s.M == 0 || s.N == 0) return;
#pragma omp parallel num_threads(s.nthreads)
  {
    int64_t m = 0;
    for (; m + 4 <= s.M; m += 4) sign_linear_rows<4, 4>(s, m);
    for (; m < s.M; ++m) sign_linear_rows<1, 8>(s, m);
  }
}
#endif  // SK_VW == 16
