#include "codebook/decode.h"

namespace sk {

uint32_t codebook_decode(const uint32_t* idx, int64_t Wd, const float* codebook, int64_t bits, int64_t field,
                         int64_t group_size, int64_t row0, int64_t rows, int64_t K, float* out, int nthreads) {
  const int64_t per = 32 / field, emask = (int64_t{1} << bits) - 1, fmask = (int64_t{1} << field) - 1;
  uint32_t seen = 0;
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(| : seen)
  for (int64_t r = 0; r < rows; ++r) {
    const float* cb = codebook + ((row0 + r) / group_size) * (emask + 1);
    const uint32_t* row = idx + r * Wd;
    float* o = out + r * K;
    for (int64_t w = 0; w < Wd; ++w) {
      uint32_t word = row[w];
      seen |= word;
      const int64_t k0 = w * per, n = K - k0 < per ? K - k0 : per;
      for (int64_t i = 0; i < n; ++i, word >>= field) o[k0 + i] = cb[word & fmask & emask];
    }
  }
  return seen;
}

}  // namespace sk
