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
  // the 16 rows' words are gathered straight into registers (a detour through memory would
  // stall every iteration on store forwarding); rows past the tile's end read as zero
  i16v offs;
  SK_UNROLL
  for (int i = 0; i < 16; ++i) offs[i] = static_cast<int32_t>(i * t.stride);
  const unsigned short valid = static_cast<unsigned short>(t.rows >= 16 ? 0xffff : (1u << t.rows) - 1);
  i16v seen = i16v{};
  for (int64_t w = 0; w < t.nwords; ++w) {
    const i16v bits = (i16v)__builtin_ia32_gathersiv16si(i16v{}, reinterpret_cast<const int*>(t.words + w), offs,
                                                          valid, 4);
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
  }
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
