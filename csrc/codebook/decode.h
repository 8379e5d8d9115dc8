// The float rows a codebook weight stands for (the large-M path hands them to a dense GEMM).
#pragma once
#include <cstdint>

namespace sk {

// out[r, k] = codebook[(row0 + r) / group_size][field k of idx row r] for r < rows, k < K, a
// field read through its low `bits` bits (arguments already validated by the caller). Returns
// the bitwise OR of every index word, from which the caller reports an invalid 3-bit index (>= 8).
uint32_t codebook_decode(const uint32_t* idx, int64_t Wd, const float* codebook, int64_t bits, int64_t field,
                         int64_t group_size, int64_t row0, int64_t rows, int64_t K, float* out, int nthreads);

}  // namespace sk
