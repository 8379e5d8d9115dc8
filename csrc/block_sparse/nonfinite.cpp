// The NaNs of the blocks the block-sparse kernels skip (no ISA variants: a pass over x, rarely more).
#include <cstring>
#include <limits>
#include <vector>

#include "block_sparse/nonfinite.h"

namespace sk {

namespace {

// Whether row x[0..K) holds an Inf or a NaN (exponent bits all set), without branches so that
// the loop vectorizes.
bool has_nonfinite(const float* x, int64_t K) {
  uint32_t any = 0;
  for (int64_t k = 0; k < K; ++k) {
    uint32_t u;
    std::memcpy(&u, x + k, sizeof u);
    any |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return any != 0;
}

}  // namespace

void bsr_propagate_nonfinite(const float* x, int64_t M, int64_t K, const int32_t* cols, const int32_t* row_off,
                             int64_t Nb, int64_t Kb, int64_t bh, int64_t bw, float* y, int64_t N, int nthreads) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    if (!has_nonfinite(xr, K)) continue;
    std::vector<uint8_t> bad(static_cast<size_t>(Kb), 0);  // block columns holding a non-finite x
    int64_t nbad = 0;
    for (int64_t c = 0; c < Kb; ++c) {
      const int64_t k0 = c * bw, width = (K - k0) < bw ? (K - k0) : bw;
      bad[c] = has_nonfinite(xr + k0, width);
      nbad += bad[c];
    }
    for (int64_t r = 0; r < Nb; ++r) {
      int64_t stored = 0;  // of the bad block columns, how many this block row stores
      for (int32_t b = row_off[r]; b < row_off[r + 1]; ++b) stored += bad[cols[b]];
      if (stored == nbad) continue;  // every non-finite value met a stored block: the kernel's result
      const int64_t n1 = (r + 1) * bh < N ? (r + 1) * bh : N;
      for (int64_t n = r * bh; n < n1; ++n) y[m * N + n] = nan;
    }
  }
}

}  // namespace sk
