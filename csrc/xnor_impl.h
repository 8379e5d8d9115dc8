// XNOR-popcount GEMM on bit-packed +-1 vectors, written once and compiled per ISA (see
// isa_*.cpp; include only there, inside the ISA namespace). Scalar 64-bit popcount: the
// POPCNT instruction on AVX2/AVX-512 targets; isa_avx512vp.cpp has the VPOPCNTDQ variant.
//
// out[m, n] = K - 2 * popcount(a[m] ^ b[n]); the bits of the last word past K are masked
// off, so padding never counts, whatever it holds. Register tiles of TM rows of a x TN
// rows of b share every loaded word; threads split (row tile, column block) pairs statically.

#include "xnor_rows.h"

#ifndef SK_XNOR_VECTOR_TILE  // isa_avx512vp.cpp defines its own VPOPCNTDQ tile first
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
    const uint64_t mask = w + 1 < W ? ~uint64_t(0) : last_word_mask(g.K);
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
    for (int j = 0; j < TN; ++j) g.out[(m0 + i) * g.N + n0 + j] = static_cast<int32_t>(g.K - 2 * acc[i][j]);
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
