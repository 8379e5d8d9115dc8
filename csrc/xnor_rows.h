// Tile helpers shared by the XNOR kernels (xnor_impl.h and isa_avx512vp.cpp). Included
// inside each ISA namespace.
#pragma once
#include "kernel_util.h"

// Row pointers of a tile: rows m0.. of a and n0.. of b.
template <int TM, int TN>
static inline void xnor_rows(const XnorGemmArgs& g, int64_t m0, int64_t n0, const uint64_t** A, const uint64_t** B) {
  SK_UNROLL
  for (int i = 0; i < TM; ++i) A[i] = g.a + (m0 + i) * g.W;
  SK_UNROLL
  for (int j = 0; j < TN; ++j) B[j] = g.b + (n0 + j) * g.W;
}

