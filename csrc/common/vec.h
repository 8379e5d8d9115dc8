// Vector types and small helpers shared by every format's kernel header. Included inside each
// ISA namespace (once per translation unit, see common/instantiate.h), so everything is static and
// compiled for that ISA alone. vf and its helpers need SK_VW, the floats per vector of the ISA.
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

#ifdef SK_VW
typedef float vf __attribute__((vector_size(SK_VW * 4)));
// the same vector, for unaligned access to float arrays
typedef float vfu __attribute__((vector_size(SK_VW * 4), aligned(4), may_alias));

static inline vf vload(const float* p) { return *reinterpret_cast<const vfu*>(p); }
static inline void vstore(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
// s - (+0) is exactly s for every s (unlike s + 0 for s = -0), so the compiler folds the
// subtraction and emits a plain broadcast, from memory where s is loaded.
static inline vf vsplat(float s) { return s - vf{}; }

// 8 x 8 transpose in registers: dst[c * ds + r] = src[r * ss + c].
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
__attribute__((always_inline)) static inline void transpose8x8(const float* src, int64_t ss, float* dst,
                                                               int64_t ds) {
  v8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = *reinterpret_cast<const v8u*>(src + i * ss);
  for (int i = 0; i < 8; i += 2) {  // interleave pairs of rows within 128-bit halves
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {  // interleave pairs of 64-bit elements
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {  // swap 128-bit halves between rows i and i + 4
    v8 lo = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v8 hi = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    *reinterpret_cast<v8u*>(dst + i * ds) = lo;
    *reinterpret_cast<v8u*>(dst + (i + 4) * ds) = hi;
  }
}
#endif  // SK_VW
