// What the AMX kernels share (binary/kernel_amx.cpp, the XNOR GEMM, and codebook/kernel_amx.cpp,
// the codebook int8 option): the tile configuration, the 32 x 32 block step on tiles 0-7 and the
// scratch slot. The tile unit is 16 x 16 x 64 int8 multiply-accumulates per TDPBSSD. Included
// by those files only, on x86-64; everything is static, compiled with the SK_AMX target attribute.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#include "common/kernel_prelude.h"

namespace sk {
namespace amx {

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline uint64_t low_bits_mask(int64_t bits) {  // bits in 1..64
  return bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
}
#define SK_UNROLL _Pragma("GCC unroll 32")

// A function attribute rather than the target pragma of the other ISA files: GCC 12 refuses to
// inline the intrinsics into C++ code under the pragma, or under an arch= target.
#define SK_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni,amx-tile,amx-int8")))

constexpr int64_t kTile = 1024;          // bytes of one 16 x 64 int8 tile
constexpr int64_t kKWords = 8;  // P words expanded at a time: 16 KB that stay in L1

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Every kernel here uses tiles 0-7 as 16 rows x 64 bytes (int32 accumulators: 16 x 16).
SK_AMX static void configure_tiles() {
  TileConfig cfg = {};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

// The products of one 64-byte step: accumulator tiles 0, 2 += P tiles (p0, p1: 16 rows each)
// times the Q tile q0; with q1 also 1, 3 += the P tiles times q1. Each operand tile is loaded
// once and used twice.
SK_AMX static inline void tile_step(const int8_t* p0, const int8_t* p1, const int8_t* q0, const int8_t* q1) {
  _tile_loadd(4, p0, 64);
  _tile_loadd(6, q0, 64);
  _tile_dpbssd(0, 4, 6);
  _tile_loadd(5, p1, 64);
  _tile_dpbssd(2, 5, 6);
  if (q1) {
    _tile_loadd(7, q1, 64);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(3, 5, 7);
  }
}
// the four accumulator tiles into c[32][32] (int32, rows 128 bytes apart)
SK_AMX static inline void store_accumulators(int32_t* c) {
  _tile_stored(0, c, 128);
  _tile_stored(1, c + 16, 128);
  _tile_stored(2, c + 16 * 32, 128);
  _tile_stored(3, c + 16 * 32 + 16, 128);
}
// c[32][32] (+)= 32 expanded P rows (kw words, [2][kw][16][64]) times 2 expanded 16-row Q
// panels (words from q0, q1 on, 1 KB apart): four accumulator tiles.
SK_AMX static inline void tile_block(const int8_t* p, const int8_t* q0, const int8_t* q1, int64_t kw, bool accumulate,
                                     int32_t* c) {
  const int8_t* p1 = p + kw * kTile;
  if (accumulate) {
    _tile_loadd(0, c, 128);
    _tile_loadd(1, c + 16, 128);
    _tile_loadd(2, c + 16 * 32, 128);
    _tile_loadd(3, c + 16 * 32 + 16, 128);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t w = 0; w < kw; ++w) tile_step(p + w * kTile, p1 + w * kTile, q0 + w * kTile, q1 + w * kTile);
  store_accumulators(c);
}

SK_AMX static inline __mmask16 first(int64_t n) { return n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1); }

// The calling thread's buffer for these kernels (isa.cpp's thread_scratch, a slot no other kernel
// of a call uses), grown as needed and kept: a fresh allocation per call would fault its pages
// in every time.
static int8_t* scratch(int64_t bytes) { return static_cast<int8_t*>(thread_scratch(static_cast<size_t>(bytes), 3)); }

}  // namespace amx
}  // namespace sk
#endif
