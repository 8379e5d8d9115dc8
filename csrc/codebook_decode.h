// The float rows a codebook weight stands for (the large-M path hands them to a dense GEMM).
#pragma once
#include <cstdint>

namespace sk {

// out[r, k] = codebook[(row0 + r) / group_size][field k of idx row r] for r < rows, k < K.
void codebook_decode(const uint32_t* idx, int64_t Wd, const float* codebook, int64_t bits, int64_t field,
                     int64_t group_size, int64_t row0, int64_t rows, int64_t K, float* out, int nthreads);

}  // namespace sk
