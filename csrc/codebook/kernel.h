// Codebook matmul (k-means weight clustering), written once and compiled per ISA (see
// codebook/kernel_<isa>.cpp: include only there, inside the ISA namespace).
//
// AVX-512: table lookup on the indices (common/lut.h). A 4-bit lookup group ("nibble") holds
// 4 / field indices; its table is the 16 sums sum_i codebook[v_i] * x[k_i] over the values the
// nibble can take, built per activation row and per codebook group with one FMA per index, so
// a VPERMPS does 16 rows x (4 / field) multiply-accumulates: 64 at 1 bit, 32 at 2 bits, 16 at
// 3-4 bits. Other ISAs decode each weight row to floats once and take dot products.
// Fields wider than `bits` (3-bit indices in 4-bit fields) are read through their low `bits`
// bits, so an invalid index (>= 8) never reads past its codebook; every path ORs the index words
// it reads into args.words_or, from which the caller reports such an index.

#include "common/vec.h"

// out[k] = table[field k of row, low bits emask] for k < K (fields of f bits, 32 / f per word);
// returns the bitwise OR of the row's words
template <typename T>
static inline uint32_t decode_row(const uint32_t* row, int64_t Wd, int64_t f, int64_t emask, int64_t K,
                                  const T* table, T* out) {
  const int64_t per = 32 / f;
  uint32_t seen = 0;
  for (int64_t wd = 0; wd < Wd; ++wd) {
    uint32_t word = row[wd];
    seen |= word;
    const int64_t k0 = wd * per, nk = K - k0 < per ? K - k0 : per;
    for (int64_t i = 0; i < nk; ++i, word >>= f) out[k0 + i] = table[word & emask];
  }
  return seen;
}

#if SK_VW == 16
#include "common/lut.h"
// tables of words [w0, w1) of activation row x for codebook row cb (2^bits entries)
static void build_codebook_tables(const CodebookLinearArgs& a, const float* x, const float* cb, int64_t w0,
                                  int64_t w1, float* tables) {
  const int64_t f = a.field, ipn = 4 / f, per = 32 / f, emask = (int64_t{1} << a.bits) - 1;
  f16v C[4];  // C[i][v]: the centroid the i-th index of nibble value v selects
  for (int64_t i = 0; i < ipn; ++i)
    for (int v = 0; v < 16; ++v) C[i][v] = cb[(v >> (f * i)) & ((1 << f) - 1) & emask];
  for (int64_t w = w0; w < w1; ++w)
    for (int64_t j = 0; j < 8; ++j) {
      const int64_t k0 = w * per + j * ipn;
      f16v acc = f16v{};
      // past K nothing is added: a padding field selects centroid 0, and 0 * a non-finite
      // centroid would be NaN where the product has no term at all
      for (int64_t i = 0; i < ipn && k0 + i < a.K; ++i) acc += C[i] * x[k0 + i];
      *reinterpret_cast<f16u*>(tables + (w * 8 + j) * 16) = acc;
    }
}

void codebook_linear(const CodebookLinearArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  constexpr int64_t MC = 4;
  // (N - 1) / group_size + 1 groups: N + group_size - 1 could wrap for a huge group_size
  const int64_t tstride = a.Wd * 8 * 16, G = (a.N - 1) / a.group_size + 1, ncb = int64_t{1} << a.bits;
  float* tb = static_cast<float*>(thread_scratch(sizeof(float) * MC * tstride, 0));
  uint32_t seen = 0;
#pragma omp parallel num_threads(a.nthreads) reduction(| : seen)
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = g * a.group_size, r1 = imin(a.N, r0 + a.group_size), tiles = (r1 - r0 + 15) / 16;
    for (int64_t m0 = 0; m0 < a.M; m0 += MC) {
      const int64_t mc = imin(MC, a.M - m0);
#pragma omp for schedule(static)
      for (int64_t c = 0; c < mc * 8; ++c) {  // each row's tables in 8 slices
        const int64_t m = c / 8, w0 = (c % 8) * a.Wd / 8, w1 = (c % 8 + 1) * a.Wd / 8;
        build_codebook_tables(a, a.x + (m0 + m) * a.K, a.codebook + g * ncb, w0, w1, tb + m * tstride);
      }
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t n0 = r0 + 16 * t;
        const LutTile tile{a.idx + n0 * a.Wd, a.Wd, a.Wd, tb, tstride, imin(16, r1 - n0), nullptr,
                           a.bias ? a.bias + n0 : nullptr, a.y + m0 * a.N + n0, a.N, &seen};
        lut_tile_rows(tile, mc);
      }
    }
  }
  *a.words_or |= seen;
}

#else
void codebook_linear(const CodebookLinearArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  typedef Vec<SK_VW> V;
  typedef typename V::type vw;
  const int64_t f = a.field, emask = (int64_t{1} << a.bits) - 1, K = a.K, Kv = K - K % SK_VW;
  // every thread's weight row, allocated here (an allocation failure inside the parallel region
  // could not be reported)
  const int64_t stride = (K + SK_VW + 15) / 16 * 16;
  float* rows = static_cast<float*>(thread_scratch(sizeof(float) * stride * a.nthreads, 0));
  uint32_t seen = 0;
#pragma omp parallel num_threads(a.nthreads) reduction(| : seen)
  {
    float* w = rows + stride * omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t n = 0; n < a.N; ++n) {
      const float* cb = a.codebook + (n / a.group_size) * (emask + 1);
      const uint32_t* row = a.idx + n * a.Wd;
      seen |= decode_row(row, a.Wd, f, emask, K, cb, w);
      for (int64_t m = 0; m < a.M; ++m) {
        const float* x = a.x + m * K;
        vw acc = vw{};
        for (int64_t k = 0; k < Kv; k += SK_VW) acc += V::load(x + k) * V::load(w + k);
        float sum = V::sum(acc);
        for (int64_t k = Kv; k < K; ++k) sum += x[k] * w[k];
        a.y[m * a.N + n] = sum + (a.bias ? a.bias[n] : 0.f);
      }
    }
  }
  *a.words_or |= seen;
}
#endif

// The int8 option, generic: each weight row decoded to int8 once, integer dot products with
// the quantized activation rows (int32 sums are exact: the result depends only on the inputs).
// Also the small-M path of the AMX ISA.
// A row holding an Inf or a NaN gets scale NaN and quantized values 0: its outputs are all NaN.
static inline float quantize_row_q8(const float* x, int64_t K, int8_t* xq) {
  float amax = 0.f;
  int finite = 1;
  for (int64_t k = 0; k < K; ++k) {
    const float v = __builtin_fabsf(x[k]);
    finite &= v <= __FLT_MAX__;  // false for Inf and NaN
    amax = v > amax ? v : amax;
  }
  const float scale = finite ? amax / 127.f : __builtin_nanf("");
  for (int64_t k = 0; k < K; ++k) {
    float v = scale > 0.f ? __builtin_nearbyintf(x[k] / scale) : 0.f;
    v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
    xq[k] = static_cast<int8_t>(v);
  }
  return scale;
}

void codebook_linear_q8(const CodebookQ8Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const int64_t f = a.field, emask = (int64_t{1} << a.bits) - 1, K = a.K;
  int8_t* xq = static_cast<int8_t*>(thread_scratch(a.M * K, 1));
  float* xs = static_cast<float*>(thread_scratch(sizeof(float) * a.M, 2));
  const int64_t stride = (K + 63) / 64 * 64;
  int8_t* rows = static_cast<int8_t*>(thread_scratch(stride * a.nthreads, 0));
  uint32_t seen = 0;
#pragma omp parallel num_threads(a.nthreads) reduction(| : seen)
  {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < a.M; ++m) xs[m] = quantize_row_q8(a.x + m * K, K, xq + m * K);
    int8_t* w = rows + stride * omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t n = 0; n < a.N; ++n) {
      const int64_t g = n / a.group_size;
      const int8_t* qcb = a.qcodebook + g * 16;
      const uint32_t* row = a.idx + n * a.Wd;
      seen |= decode_row(row, a.Wd, f, emask, K, qcb, w);
      for (int64_t m = 0; m < a.M; ++m) {
        const int8_t* q = xq + m * K;
        int32_t acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(q[k]) * w[k];
        a.y[m * a.N + n] = xs[m] * a.cscale[g] * static_cast<float>(acc) + (a.bias ? a.bias[n] : 0.f);
      }
    }
  }
  *a.words_or |= seen;
}
