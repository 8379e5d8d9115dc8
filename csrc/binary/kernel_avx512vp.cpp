// The XNOR GEMM for AVX-512 with VPOPCNTDQ (Ice Lake and later); common/isa.cpp selects the
// avx512vp level only on a CPU that reports avx512vpopcntdq. Only this kernel uses VPOPCNTDQ:
// the level runs the avx512 versions of the other binary kernels (binary/register.cpp).
#include "binary/args.h"
#include "common/kernel_prelude.h"

namespace sk {
namespace avx512vp {

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("arch=skylake-avx512,avx512vpopcntdq")  // AVX-512 + VPOPCNTDQ
#include "binary/rows.h"

typedef uint64_t u64x8 __attribute__((vector_size(64)));
typedef uint64_t u64x8u __attribute__((vector_size(64), aligned(8), may_alias));

static inline u64x8 load8(const uint64_t* p) { return *reinterpret_cast<const u64x8u*>(p); }
typedef long long i64x8 __attribute__((vector_size(64)));
// VPOPCNTQ on 8 words (GCC's builtin behind _mm512_popcnt_epi64)
static inline u64x8 popcnt8(u64x8 v) { return (u64x8)__builtin_ia32_vpopcountq_v8di((i64x8)v); }

// out[j] = sum of the 8 lanes of v[j]. For 16 vectors a shuffle-and-add tree (three
// levels, 42 vector operations) replaces 16 separate horizontal sums.
template <int NV>
static inline void lane_sums(const u64x8* v, uint64_t* out) {
  if constexpr (NV == 16) {
    u64x8 a[8], b[4], c[2];
    SK_UNROLL
    for (int k = 0; k < 8; ++k)  // lanes 0-3: v[2k] halves summed; lanes 4-7: v[2k+1]
      a[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
             __builtin_shufflevector(v[2 * k], v[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    SK_UNROLL
    for (int k = 0; k < 4; ++k)  // pairs of lanes: v[4k], v[4k+2], v[4k+1], v[4k+3]
      b[k] = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
             __builtin_shufflevector(a[2 * k], a[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15);
    SK_UNROLL
    for (int k = 0; k < 2; ++k)  // one full sum per lane: v[8k + order[lane]]
      c[k] = __builtin_shufflevector(b[2 * k], b[2 * k + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
             __builtin_shufflevector(b[2 * k], b[2 * k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    SK_UNROLL
    for (int k = 0; k < 2; ++k) {
      constexpr int order[8] = {0, 4, 2, 6, 1, 5, 3, 7};
      SK_UNROLL
      for (int l = 0; l < 8; ++l) out[8 * k + order[l]] = c[k][l];
    }
  } else {
    for (int j = 0; j < NV; ++j) {
      uint64_t t = 0;
      for (int l = 0; l < 8; ++l) t += v[j][l];
      out[j] = t;
    }
  }
}

// out[m, n] = K - 2 * popcount(a[m] ^ b[n]), 512 bits per instruction: TM x TN tiles of
// vector accumulators, reduced across lanes once per tile; leftover words (W % 8) scalar.
template <int TM, int TN>
static inline void xnor_tile(const XnorGemmArgs& g, int64_t m0, int64_t n0) {
  // full 8-word vectors; the bits past K in the last word are masked off, in the last
  // vector when it holds that word, else in the scalar tail
  const int64_t W = g.W, Wv = W - W % 8;
  const bool mask_last_vector = W > 0 && W % 8 == 0 && g.last_bits < 64;  // (no words: nothing to mask)
  const int64_t Wloop = mask_last_vector ? Wv - 8 : Wv;
  const uint64_t* A[TM];
  const uint64_t* B[TN];
  xnor_rows<TM, TN>(g, m0, n0, A, B);
  u64x8 acc[TM][TN];
  SK_UNROLL
  for (int i = 0; i < TM; ++i)
    SK_UNROLL
    for (int j = 0; j < TN; ++j) acc[i][j] = u64x8{};
  for (int64_t w = 0; w < Wloop; w += 8) {
    u64x8 bv[TN];
    SK_UNROLL
    for (int j = 0; j < TN; ++j) bv[j] = load8(B[j] + w);
    SK_UNROLL
    for (int i = 0; i < TM; ++i) {
      const u64x8 av = load8(A[i] + w);
      SK_UNROLL
      for (int j = 0; j < TN; ++j) acc[i][j] += popcnt8(av ^ bv[j]);
    }
  }
  if (mask_last_vector) {
    u64x8 mask = ~u64x8{};
    mask[7] = low_bits_mask(g.last_bits);
    SK_UNROLL
    for (int i = 0; i < TM; ++i)
      SK_UNROLL
      for (int j = 0; j < TN; ++j) acc[i][j] += popcnt8((load8(A[i] + Wloop) ^ load8(B[j] + Wloop)) & mask);
  }
  uint64_t sums[TM * TN];
  lane_sums<TM * TN>(&acc[0][0], sums);
  SK_UNROLL
  for (int i = 0; i < TM; ++i)
    SK_UNROLL
    for (int j = 0; j < TN; ++j) {
      int64_t c = static_cast<int64_t>(sums[i * TN + j]);
      for (int64_t w = Wv; w < W; ++w)
        c += __builtin_popcountll((A[i][w] ^ B[j][w]) & (w + 1 < W ? ~uint64_t(0) : low_bits_mask(g.last_bits)));
      xnor_store(g, m0 + i, n0 + j, g.K - 2 * c);
    }
}

#define SK_XNOR_VECTOR_TILE
#define SK_VW 16
#include "binary/kernel.h"
#undef SK_VW
#undef SK_XNOR_VECTOR_TILE

#pragma GCC pop_options
#else
void xnor_gemm(const XnorGemmArgs&) {}  // never selected off x86
#endif

}  // namespace avx512vp
}  // namespace sk
