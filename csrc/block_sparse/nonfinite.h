#pragma once
#include <cstdint>

namespace sk {

// IEEE semantics of y = x @ W.T for the blocks a kernel skips: an absent block is zeros, and
// 0 * Inf = 0 * NaN = NaN, so a non-finite x[m, k] makes y[m, n] NaN for every output row n whose
// block row stores no block at k's block column. The kernels multiply stored blocks only; this
// sets those outputs to NaN afterwards. A pass over x when every value is finite (the usual
// case), per-row work only for rows holding a non-finite value.
void bsr_propagate_nonfinite(const float* x, int64_t M, int64_t K, const int32_t* cols, const int32_t* row_off,
                             int64_t Nb, int64_t Kb, int64_t bh, int64_t bw, float* y, int64_t N, int nthreads);

}  // namespace sk
