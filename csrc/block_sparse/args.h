// The plain argument struct of the block-sparse kernels, shared by the registration (register.cpp)
// and the per-ISA kernel files. No inline functions here: this header is compiled under several
// instruction-set targets, and an inline function emitted under AVX-512 could be picked by the
// linker for every caller.
#pragma once
#include <cstdint>

#include "common/per_isa.h"

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

// Entry points of the block-sparse kernels (block_sparse/kernel.h), one definition per instruction
// set.
SK_DECLARE_PER_ISA(void bsr_linear(const BsrLinearArgs& a);)

}  // namespace sk
