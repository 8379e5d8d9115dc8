// Table-lookup products on AVX-512, shared by BinaryConnect's sign-add (binary/kernel.h) and the
// codebook matmul (codebook/kernel.h). Include only inside an ISA namespace with SK_VW == 16.
//
// The weight is 4-bit lookup groups ("nibbles") packed into 32-bit words along K, and every
// group of activations has a table of the 16 values its nibble can select (the sum of the
// products of the activations with the weights that nibble stands for). VPERMPS looks up 16
// weight rows' entries at once: the 16 lanes are 16 rows, a lane's 32-bit word holds 8 nibbles,
// and since VPERMPS reads only an index's low 4 bits a shift right by 4 steps to the next one.
#pragma once

typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));
typedef float f16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t i16u __attribute__((vector_size(64), aligned(4), may_alias));

// In registers: r[i] = 16 consecutive words of row i -> r[j] = word j of rows 0..15 (four stages of
// two-source shuffles: 32-bit, 64-bit, 128-bit and 256-bit interleaves).
static inline void transpose16(i16v* r) {
  i16v a[16], b[16], c[16];
  for (int k = 0; k < 8; ++k) {  // 32-bit interleave of rows 2k, 2k+1
    a[2 * k] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29);
    a[2 * k + 1] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
  }
  for (int k = 0; k < 4; ++k) {  // 64-bit interleave: rows 4k..4k+3
    for (int h = 0; h < 2; ++h) {
      const i16v& x = a[4 * k + h];
      const i16v& y = a[4 * k + 2 + h];
      b[4 * k + 2 * h] = __builtin_shufflevector(x, y, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
      b[4 * k + 2 * h + 1] = __builtin_shufflevector(x, y, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
  }
  for (int k = 0; k < 2; ++k)  // 128-bit lanes: rows 8k..8k+7
    for (int h = 0; h < 4; ++h) {
      const i16v& x = b[8 * k + h];
      const i16v& y = b[8 * k + 4 + h];
      c[8 * k + 2 * h] = __builtin_shufflevector(x, y, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
      c[8 * k + 2 * h + 1] = __builtin_shufflevector(x, y, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
  constexpr int rev[16] = {0, 8, 4, 12, 1, 9, 5, 13, 2, 10, 6, 14, 3, 11, 7, 15};  // 4-bit reversal
  for (int h = 0; h < 8; ++h) {  // 256-bit halves: rows 0..15; slot q holds column rev[q]
    const i16v& x = c[h];
    const i16v& y = c[8 + h];
    r[rev[2 * h]] = __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    r[rev[2 * h + 1]] = __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
}

// One tile: up to 16 weight rows against MC activation rows.
struct LutTile {
  const uint32_t* words;  // the tile's first row; rows are `stride` words apart
  int64_t stride, nwords;  // words per row in memory; words to read (8 tables each)
  const float* tables;     // activation row 0's tables: tables[(8 * w + j) * 16 + v] for nibble j of word w
  int64_t tstride;         // floats from one activation row's tables to the next's
  int64_t rows;            // weight rows in the tile (1..16)
  const float* scale;      // per weight row, or nullptr (1)
  const float* bias;       // per weight row, or nullptr (0)
  float* y;                // y[m * ldy + i] for activation row m, weight row i
  int64_t ldy;
  uint32_t* words_or;      // or nullptr: |= the bitwise OR of every word read
};

template <int MC>
static inline void lut_tile(const LutTile& t) {
  constexpr int NA = MC == 1 ? 4 : 2;  // accumulators per activation row: short add chains
  f16v acc[MC][NA];
  SK_UNROLL
  for (int m = 0; m < MC; ++m)
    SK_UNROLL
    for (int a = 0; a < NA; ++a) acc[m][a] = f16v{};
  // a partial tile's words are gathered straight into registers (a detour through memory would
  // stall every iteration on store forwarding); rows past the tile's end read as zero
  i16v offs;
  SK_UNROLL
  for (int i = 0; i < 16; ++i) offs[i] = static_cast<int32_t>(i * t.stride);
  const unsigned short valid = static_cast<unsigned short>(t.rows >= 16 ? 0xffff : (1u << t.rows) - 1);
  i16v seen = i16v{};
  // word w of the 16 rows (bits): its 8 nibbles look up 8 tables per activation row
  auto step = [&](const i16v bits, int64_t w) __attribute__((always_inline)) {
    seen |= bits;
    i16v idx[8];
    SK_UNROLL
    for (int j = 0; j < 8; ++j) idx[j] = bits >> (4 * j);
    const float* tw = t.tables + w * 8 * 16;
    SK_UNROLL
    for (int m = 0; m < MC; ++m)  // row by row: 8 lookups per row keep the live registers few
      SK_UNROLL
      for (int j = 0; j < 8; ++j) {
        const f16v table = *reinterpret_cast<const f16u*>(tw + m * t.tstride + j * 16);
        acc[m][j % NA] += __builtin_ia32_permvarsf512_mask(table, idx[j], f16v{}, 0xffff);
      }
  };
  int64_t w = 0;
  if (t.rows == 16) {  // a full tile: 16 words of each row loaded and transposed, no gathers
    alignas(64) i16v cols[16];
    for (; w + 16 <= t.nwords; w += 16) {
      SK_UNROLL
      for (int i = 0; i < 16; ++i) cols[i] = *reinterpret_cast<const i16u*>(t.words + i * t.stride + w);
      transpose16(cols);
      for (int j = 0; j < 16; ++j) step(cols[j], w + j);
    }
  }
  for (; w < t.nwords; ++w)  // the rest, and partial tiles: gathered (rows past the tile read as zero)
    step((i16v)__builtin_ia32_gathersiv16si(i16v{}, reinterpret_cast<const int*>(t.words + w), offs, valid, 4), w);
  if (t.words_or)
    for (int i = 0; i < 16; ++i) *t.words_or |= static_cast<uint32_t>(seen[i]);
  f16v scale, bias = f16v{};
  SK_UNROLL
  for (int i = 0; i < 16; ++i) scale[i] = 1.f;
  for (int64_t i = 0; i < t.rows; ++i) {
    if (t.scale) scale[i] = t.scale[i];
    if (t.bias) bias[i] = t.bias[i];
  }
  SK_UNROLL
  for (int m = 0; m < MC; ++m) {
    SK_UNROLL
    for (int a = 1; a < NA; ++a) acc[m][0] += acc[m][a];
    __builtin_ia32_storeups512_mask(t.y + m * t.ldy, acc[m][0] * scale + bias, valid);
  }
}

// A tile of MC activation rows, or of fewer one row at a time.
static inline void lut_tile_rows(LutTile t, int64_t mc) {
  if (mc == 4) return lut_tile<4>(t);
  for (int64_t m = 0; m < mc; ++m, t.tables += t.tstride, t.y += t.ldy) lut_tile<1>(t);
}
