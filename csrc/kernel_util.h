// Small helpers shared by the kernel headers. Included inside each ISA namespace (once per
// translation unit), so everything is static and compiled for that ISA alone.
#pragma once

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Loops over register-tile dimensions must be unrolled completely, or the accumulator
// arrays live in memory (GCC's heuristics stop short for some tile/vector sizes).
#define SK_UNROLL _Pragma("GCC unroll 32")

// Mask of the low `bits` bits of a word (bits in 1..64).
static inline uint64_t low_bits_mask(int64_t bits) {
  return bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
}

// Stores one XNOR dot product: int32, or float through the fused scale/bias epilogue.
static inline void xnor_store(const XnorGemmArgs& g, int64_t m, int64_t n, int64_t dot) {
  if (g.out_f == nullptr) {
    g.out[m * g.N + n] = static_cast<int32_t>(dot);
    return;
  }
  float v = static_cast<float>(dot) * g.col_scale[n];
  if (g.row_scale) v *= g.row_scale[m];
  v += g.bias ? g.bias[n] : 0.f;
  if (g.out_hw > 0)
    g.out_f[(m / g.out_hw) * g.N * g.out_hw + n * g.out_hw + m % g.out_hw] = v;
  else
    g.out_f[m * g.N + n] = v;
}

// Vectors of W floats (W = 4, 8, 16) with unaligned load and lane sum.
template <int W>
struct Vec;
#define SK_DEFINE_VEC(W)                                                                        \
  template <>                                                                                   \
  struct Vec<W> {                                                                               \
    typedef float type __attribute__((vector_size(W * 4)));                                     \
    typedef float unaligned __attribute__((vector_size(W * 4), aligned(4), may_alias));         \
    static inline type load(const float* p) { return *reinterpret_cast<const unaligned*>(p); } \
    static inline float sum(type v) {                                                           \
      float s = 0.f;                                                                            \
      for (int i = 0; i < W; ++i) s += v[i];                                                    \
      return s;                                                                                 \
    }                                                                                           \
  };
SK_DEFINE_VEC(4)
SK_DEFINE_VEC(8)
SK_DEFINE_VEC(16)
#undef SK_DEFINE_VEC
