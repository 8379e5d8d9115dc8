// BSR -> dense scatter (used by the CPU op's dense fallback). Plain copies: no ISA variants.
#include <cstring>

#include "bsr_convert.h"

namespace sk {

void bsr_to_dense(const float* values, const int32_t* cols, const int32_t* row_off, int64_t Nb, int64_t bh,
                  int64_t bw, float* dense, int64_t N, int64_t K, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t r = 0; r < Nb; ++r) {
    const int64_t rows = (N - r * bh) < bh ? (N - r * bh) : bh;
    float* out = dense + r * bh * K;
    std::memset(out, 0, sizeof(float) * static_cast<size_t>(rows * K));
    for (int32_t b = row_off[r]; b < row_off[r + 1]; ++b) {
      const int64_t k0 = static_cast<int64_t>(cols[b]) * bw;
      const int64_t width = (K - k0) < bw ? (K - k0) : bw;
      const float* blk = values + static_cast<int64_t>(b) * bh * bw;
      for (int64_t i = 0; i < rows; ++i)
        std::memcpy(out + i * K + k0, blk + i * bw, sizeof(float) * static_cast<size_t>(width));
    }
  }
}

}  // namespace sk
