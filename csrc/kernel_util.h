// Small helpers shared by the kernel headers. Included inside each ISA namespace (once per
// translation unit), so everything is static and compiled for that ISA alone.
#pragma once

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Loops over register-tile dimensions must be unrolled completely, or the accumulator
// arrays live in memory (GCC's heuristics stop short for some tile/vector sizes).
#define SK_UNROLL _Pragma("GCC unroll 32")

// Bits of the last packed word that hold elements (K > 0): all 64 when K is a multiple of 64.
static inline uint64_t last_word_mask(int64_t K) {
  return K % 64 == 0 ? ~uint64_t(0) : (uint64_t(1) << (K % 64)) - 1;
}
