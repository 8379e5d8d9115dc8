#pragma once
#include <cstdint>

namespace sk {

// dense[N, K] = the BSR matrix (indices already validated by the caller).
void bsr_to_dense(const float* values, const int32_t* cols, const int32_t* row_off, int64_t Nb, int64_t bh,
                  int64_t bw, float* dense, int64_t N, int64_t K, int nthreads);

}  // namespace sk
