// Tile helpers shared by the XNOR kernels (binary/kernel.h and binary/kernel_avx512vp.cpp). Included
// inside each ISA namespace.
#pragma once
#include "common/vec.h"

// Stores one XNOR dot product: int32, or float through the fused scale/bias epilogue.
static inline void xnor_store(const XnorGemmArgs& g, int64_t m, int64_t n, int64_t dot) {
  if (g.out_f == nullptr) {
    g.out[m * g.N + n] = static_cast<int32_t>(dot);
    return;
  }
  float v = static_cast<float>(dot) * g.col_scale[n];
  if (g.row_scale) v *= g.row_scale[m];
  v += g.bias ? g.bias[n] : 0.f;
  if (g.out_hw > 0)
    g.out_f[(m / g.out_hw) * g.N * g.out_hw + n * g.out_hw + m % g.out_hw] = v;
  else
    g.out_f[m * g.N + n] = v;
}

// Row pointers of a tile: rows m0.. of a and n0.. of b.
template <int TM, int TN>
static inline void xnor_rows(const XnorGemmArgs& g, int64_t m0, int64_t n0, const uint64_t** A, const uint64_t** B) {
  SK_UNROLL
  for (int i = 0; i < TM; ++i) A[i] = g.a + (m0 + i) * g.W;
  SK_UNROLL
  for (int j = 0; j < TN; ++j) B[j] = g.b + (n0 + j) * g.W;
}

