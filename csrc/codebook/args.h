// The plain argument structs of the codebook kernels, shared by the registration (register.cpp)
// and the per-ISA kernel files. No inline functions here: this header is compiled under several
// instruction-set targets, and an inline function emitted under AVX-512 could be picked by the
// linker for every caller.
#pragma once
#include <cstdint>

#include "common/per_isa.h"

namespace sk {

// y[m, n] = sum_k x[m, k] * codebook[n / group_size][idx(n, k)] + bias[n], idx(n, k) the field
// of `field` bits (bits rounded up to 1, 2 or 4) at position k % (32 / field) of word
// k / (32 / field) of row n. A 3-bit index >= 8 is invalid: the kernel reads its field's low 3
// bits (staying inside the codebook) and reports every index word it read through words_or, which
// the caller checks after the call (no second pass over the indices).
struct CodebookLinearArgs {
  const float* x;         // [M, K]
  const uint32_t* idx;    // [N, Wd]
  const float* codebook;  // [ceil(N / group_size), 2^bits]
  const float* bias;      // [N] or nullptr
  float* y;               // [M, N]
  int64_t M, N, K, Wd, bits, field, group_size;
  int nthreads;
  uint32_t* words_or;     // out: the bitwise OR of every index word read (left alone when M or N is 0)
};

// The int8 option of the codebook matmul: activations quantized per row to int8 (symmetric,
// scale max|x| / 127, round to nearest even), centroids given as int8 per codebook group
// (qcodebook[g][v] * cscale[g]), integer products summed exactly in int32:
// y[m, n] = xscale[m] * cscale[g(n)] * sum_k xq[m, k] * qcodebook[g(n)][idx(n, k)] + bias[n].
struct CodebookQ8Args {
  const float* x;           // [M, K]
  const uint32_t* idx;      // [N, Wd], as CodebookLinearArgs
  const int8_t* qcodebook;  // [G, 16]: entries past 2^bits repeat entry v & (2^bits - 1)
  const float* cscale;      // [G]
  const float* bias;        // [N] or nullptr
  float* y;                 // [M, N]
  int64_t M, N, K, Wd, bits, field, group_size;
  int nthreads;
  uint32_t* words_or;       // out: as CodebookLinearArgs
};

// Entry points of the codebook kernels (codebook/kernel.h; the int8 option also in
// codebook/kernel_amx.cpp), one definition per instruction set.
SK_DECLARE_PER_ISA(void codebook_linear(const CodebookLinearArgs& a);
    void codebook_linear_q8(const CodebookQ8Args& a);)
namespace amx {
void codebook_linear_q8(const CodebookQ8Args& a);
void codebook_linear_q8_vnni(const CodebookQ8Args& a);  // needs AVX512-VNNI and VBMI, not AMX
}

}  // namespace sk
