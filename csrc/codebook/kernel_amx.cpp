// The codebook matmul's int8 option on the AMX tile unit (Sapphire Rapids and later): the
// indices expanded to int8 centroids tile by tile, and its register path (VPDPBUSD, no tiles),
// which shares the index expansion and which common/isa.cpp's avx512vp level also runs on CPUs
// with VNNI and VBMI (Ice Lake, Zen 4). Shared tile helpers: common/amx.h.
#include "codebook/args.h"
#include "common/kernel_prelude.h"

#include <algorithm>

#include "common/amx.h"

namespace sk {
namespace amx {

#if defined(__x86_64__)
// ---- The codebook matmul's int8 option on the tiles -------------------------------------
// P = the weights: each row's indices expand to the int8 centroids of its group (see
// expand_chunk), 64 per tile row, kKWords chunks at a time in L1 (one chunk at a time, with the
// accumulators held in the tiles over the whole K, when M <= 32: small_m_block). Q = the activations, quantized per row (as codebook/kernel.h's generic path:
// scale = max|x| / 127, x / scale rounded to nearest even) straight into VNNI tiles, once per
// block of rows, shared by the threads, which split the weight rows. C[n][m] goes out through
// gathers along n. At M <= kVnniMaxRows the register path below (codebook_q8_vnni) runs instead.
constexpr int64_t kCbQBytes = 1 << 20;    // activation rows quantized at a time (VNNI, L2)

// Index expansion, shared by the tile and register paths. A chunk of 64 indices (8 * F bytes of
// a row, F the field bits) becomes 64 int8 centroids. F = 2, 4: a broadcast load repeats the
// chunk's bytes in every 128-bit (F = 2) or 256-bit (F = 4) lane, VPMULTISHIFTQB pulls from each
// qword the 8-bit windows starting at 8 of its indices, and a 64-entry byte permute whose entry v
// is the centroid of v's low field bits maps the windows to centroids: two instructions and a
// load per 64 weights. A qword can only reach its own lane's indices, so the centroids come out
// permuted within the chunk: byte b holds index perm[b]; the activations are quantized in that
// same order (permute_chunk), which leaves every dot product unchanged. F = 1: the 64 bits are
// a blend mask, in order.
struct RowExpander {
  __m512i shift, low, perm;
  int64_t f, row_bytes;
};

SK_AMX static RowExpander make_expander(int64_t f, int64_t bits, int64_t Wd) {
  RowExpander e;  // F = 1 uses only low and row_bytes
  alignas(64) int8_t shifts[64], lows[64], perm[64];
  for (int b = 0; b < 64; ++b) {
    const int t = b / 8, j = b % 8;
    const int lanes = f == 2 ? 2 : 4;  // qwords per broadcast lane
    const int within = f == 1 ? 0 : 8 * (t / lanes) + j;  // the index's place in the lane's qword
    shifts[b] = static_cast<int8_t>(f * within);
    perm[b] = static_cast<int8_t>(f == 1 ? b : (64 / lanes) * (t % lanes) + within);
    lows[b] = static_cast<int8_t>(b & ((1 << f) - 1) & ((1 << bits) - 1));
  }
  e.shift = _mm512_load_si512(shifts);
  e.low = _mm512_load_si512(lows);
  e.perm = _mm512_load_si512(perm);
  e.f = f;
  e.row_bytes = 4 * Wd;
  return e;
}

// 64 activation bytes of a chunk, natural order -> the expanded weights' order
SK_AMX static inline __m512i permute_chunk(const RowExpander& e, __m512i q) {
  return e.f == 1 ? q : _mm512_permutexvar_epi8(e.perm, q);
}

// entry v of a row's expansion table: the centroid of v's low field bits, xor flip
SK_AMX static inline __m512i make_table(const RowExpander& e, const int8_t* qcb, char flip) {
  const __m512i c = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qcb)));
  return _mm512_xor_si512(_mm512_permutexvar_epi8(e.low, c), _mm512_set1_epi8(flip));
}

// The 64 centroid bytes (xor flip: 0, or 0x80 for + 128 as unsigned bytes), in perm order, of
// chunk c of a row: indices src, tbl the row's table (make_table), qcb its centroids; F = field
// bits; FULL: the chunk lies wholly inside the row (no masked load). Bytes past the row read as
// index 0: the activations there are 0. The chunk's index words are ORed into seen (32-bit lanes).
template <int F, bool FULL>
SK_AMX static inline __m512i expand_chunk(const RowExpander& e, const uint8_t* src, int64_t c, __m512i tbl,
                                          const int8_t* qcb, char flip, __m512i& seen) {
  const int64_t off = c * 8 * F;
  if constexpr (F == 1) {
    uint64_t bits = 0;
    if (FULL) {
      __builtin_memcpy(&bits, src + off, 8);
    } else {
      for (int64_t b = 0; b < 8 && b < e.row_bytes - off; ++b) bits |= static_cast<uint64_t>(src[off + b]) << (8 * b);
    }
    seen = _mm512_or_si512(seen, _mm512_set1_epi64(static_cast<long long>(bits)));
    return _mm512_mask_blend_epi8(_cvtu64_mask64(bits), _mm512_set1_epi8(static_cast<char>(qcb[0] ^ flip)),
                                  _mm512_set1_epi8(static_cast<char>(qcb[1] ^ flip)));
  } else {
    __m512i raw;
    if constexpr (F == 2) {
      const __m128i r = FULL ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + off))
                             : _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << imin(16, e.row_bytes - off)) - 1),
                                                    src + off);
      raw = _mm512_broadcast_i64x2(r);
    } else {
      const __m256i r = FULL ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + off))
                             : _mm256_maskz_loadu_epi8(static_cast<__mmask32>((uint64_t{1} << imin(32, e.row_bytes - off)) - 1),
                                                       src + off);
      raw = _mm512_broadcast_i64x4(r);
    }
    seen = _mm512_or_si512(seen, raw);
    return _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(e.shift, raw), tbl);
  }
}

// Chunks c0 .. c0+kw-1 of 32 weight rows from n0 (valid of them; the rest zero) as int8
// centroids, row-major tiles [2][kw][16][64].
template <int F>
SK_AMX static void expand_weight_rows(const CodebookQ8Args& a, const RowExpander& e, int64_t n0, int64_t valid,
                                      int64_t c0, int64_t kw, int8_t* dst, uint32_t& words_or) {
  const int64_t full = e.row_bytes / (8 * F);  // chunks wholly inside a row
  __m512i seen = _mm512_setzero_si512();
  for (int64_t i = 0; i < 32; ++i) {
    int8_t* row = dst + (i / 16) * kw * kTile + (i % 16) * 64;
    if (i >= valid) {
      for (int64_t c = 0; c < kw; ++c) _mm512_store_si512(row + c * kTile, _mm512_setzero_si512());
      continue;
    }
    const int64_t n = n0 + i;
    const int8_t* qcb = a.qcodebook + (n / a.group_size) * 16;
    const __m512i tbl = make_table(e, qcb, 0);
    const uint8_t* src = reinterpret_cast<const uint8_t*>(a.idx + n * a.Wd);
    for (int64_t c = 0; c < kw; ++c) {
      const __m512i w = c0 + c < full ? expand_chunk<F, true>(e, src, c0 + c, tbl, qcb, 0, seen)
                                      : expand_chunk<F, false>(e, src, c0 + c, tbl, qcb, 0, seen);
      _mm512_store_si512(row + c * kTile, w);
    }
  }
  words_or |= static_cast<uint32_t>(_mm512_reduce_or_epi32(seen));
}

// Lanes of |x| holding an Inf or a NaN (not <= FLT_MAX, unordered included). The int8 option
// gives a row with such a value scale NaN and quantized values 0 (as codebook/kernel.h's
// quantize_row_q8): its outputs are all NaN.
SK_AMX static inline __mmask16 nonfinite_lanes(__m512 abs_x) {
  return _mm512_cmp_ps_mask(abs_x, _mm512_set1_ps(__FLT_MAX__), _CMP_NLE_UQ);
}

// Activation rows (valid of 16) into VNNI tiles [nch][16][64], each chunk in the expanded
// weights' order (permute_chunk), and their scales.
SK_AMX static void quantize_panel(const RowExpander& e, const float* x, int64_t K, int64_t nch, int64_t valid,
                                  float* xs, int8_t* dst) {
  __m512i rows16;
  {
    alignas(64) int32_t r[16];
    for (int i = 0; i < 16; ++i) r[i] = i * 16;  // tile row r, in int32 units
    rows16 = _mm512_load_si512(r);
  }
  for (int64_t i = 0; i < 16; ++i) {
    int32_t* col = reinterpret_cast<int32_t*>(dst) + i;  // column i of every tile
    if (i >= valid) {
      for (int64_t c = 0; c < nch; ++c) _mm512_i32scatter_epi32(col + c * 256, rows16, _mm512_setzero_si512(), 4);
      xs[i] = 0.f;
      continue;
    }
    const float* xr = x + i * K;
    __m512 mx = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 m = first(K - k);
      const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, xr + k));
      nonfinite |= nonfinite_lanes(a);
      mx = _mm512_max_ps(mx, a);
    }
    const float scale = nonfinite ? __builtin_nanf("") : _mm512_reduce_max_ps(mx) / 127.f;
    xs[i] = scale;
    const __m512 vs = _mm512_set1_ps(scale > 0.f ? scale : 1.f);
    for (int64_t c = 0; c < nch; ++c) {
      __m128i q[4];
      SK_UNROLL
      for (int h = 0; h < 4; ++h) {
        const int64_t k = 64 * c + 16 * h;
        const __m512 v = scale > 0.f && k < K ? _mm512_maskz_loadu_ps(first(K - k), xr + k) : _mm512_setzero_ps();
        q[h] = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_div_ps(v, vs)));  // nearest even, saturating
      }
      __m512i z = _mm512_castsi128_si512(q[0]);
      z = _mm512_inserti32x4(z, q[1], 1);
      z = _mm512_inserti32x4(z, q[2], 2);
      z = permute_chunk(e, _mm512_inserti32x4(z, q[3], 3));
      _mm512_i32scatter_epi32(col + c * 256, rows16, z, 4);  // dword r (elements 4r..4r+3) -> tile row r
    }
  }
}

// Small M: no tiles. Each weight row's 64-index chunk expands to centroid bytes in registers
// (as above), offset by 128 to unsigned bytes (VPDPBUSD takes one unsigned operand), and VPDPBUSD
// multiplies them with the activation rows (quantized the same way); the offset comes back out
// through each activation row's sum of quantized values.
constexpr int64_t kVnniMaxRows = 4;  // more activation rows: the tiles (measured crossover, K = N = 4096)
// the register path prefetches the index bytes this far ahead of each row it reads (measured
// 10-20% faster at K = N = 4096, where the indices come from L3)
constexpr int64_t kPrefetchBytes = 4096;

// Rows n0, n0+1 (valid of them) against MC activation rows (int8, Kp apart; xsum: their sums) from m0.
template <int MC, int F>
SK_AMX static void vnni_rows(const CodebookQ8Args& a, const RowExpander& e, const int8_t* xq, int64_t Kp,
                             const float* xs, const int32_t* xsum, int64_t nch, int64_t n0, int64_t valid,
                             int64_t m0, uint32_t& words_or) {
  __m512i acc[2][MC];
  SK_UNROLL
  for (int r = 0; r < 2; ++r)
    SK_UNROLL
    for (int m = 0; m < MC; ++m) acc[r][m] = _mm512_setzero_si512();
  const uint8_t* src[2];
  const int8_t* qcb[2];
  __m512i tbl[2];
  SK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int64_t n = n0 + (r < valid ? r : 0);
    src[r] = reinterpret_cast<const uint8_t*>(a.idx + n * a.Wd);
    qcb[r] = a.qcodebook + (n / a.group_size) * 16;
    tbl[r] = make_table(e, qcb[r], -128);  // + 128 as unsigned bytes
  }
  const int64_t full = imin(e.row_bytes / (8 * F), nch);  // chunks wholly inside a row
  __m512i seen = _mm512_setzero_si512();
  for (int64_t c = 0; c < nch; ++c) {
    SK_UNROLL
    for (int r = 0; r < 2; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(src[r] + c * 8 * F + kPrefetchBytes), _MM_HINT_T0);
      const __m512i w = c < full ? expand_chunk<F, true>(e, src[r], c, tbl[r], qcb[r], -128, seen)
                                 : expand_chunk<F, false>(e, src[r], c, tbl[r], qcb[r], -128, seen);
      SK_UNROLL
      for (int m = 0; m < MC; ++m)
        acc[r][m] = _mm512_dpbusd_epi32(acc[r][m], w, _mm512_loadu_si512(xq + (m0 + m) * Kp + 64 * c));
    }
  }
  words_or |= static_cast<uint32_t>(_mm512_reduce_or_epi32(seen));
  for (int r = 0; r < valid; ++r) {
    const int64_t n = n0 + r;
    const float cs = a.cscale[n / a.group_size], b = a.bias ? a.bias[n] : 0.f;
    SK_UNROLL
    for (int m = 0; m < MC; ++m) {
      const int64_t dot = static_cast<int64_t>(_mm512_reduce_add_epi32(acc[r][m])) - 128 * int64_t{xsum[m0 + m]};
      a.y[(m0 + m) * a.N + n] = xs[m0 + m] * cs * static_cast<float>(dot) + b;
    }
  }
}

// Weight rows n0, n0+1 against every activation row, 8, 4 or 1 at a time.
template <int F>
SK_AMX static void vnni_pair(const CodebookQ8Args& a, const RowExpander& e, const int8_t* xq, int64_t Kp,
                             const float* xs, const int32_t* xsum, int64_t nch, int64_t n0, int64_t valid,
                             uint32_t& words_or) {
  for (int64_t m0 = 0; m0 < a.M; m0 += 8) {  // every weight chunk expands once per 8 activation rows
    switch (imin(8, a.M - m0)) {
      case 1: vnni_rows<1, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 2: vnni_rows<2, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 3: vnni_rows<3, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 4: vnni_rows<4, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 5: vnni_rows<5, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 6: vnni_rows<6, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      case 7: vnni_rows<7, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
      default: vnni_rows<8, F>(a, e, xq, Kp, xs, xsum, nch, n0, valid, m0, words_or); break;
    }
  }
}

SK_AMX static void codebook_q8_vnni(const CodebookQ8Args& a) {
  const int64_t nch = (a.K + 63) / 64, Kp = nch * 64;
  int8_t* buf = scratch(a.M * Kp + a.M * 8);
  int8_t* xq = buf;
  float* xs = reinterpret_cast<float*>(buf + a.M * Kp);
  int32_t* xsum = reinterpret_cast<int32_t*>(buf + a.M * Kp + a.M * 4);
  const RowExpander e = make_expander(a.field, a.bits, a.Wd);
  const int nt = a.nthreads > 0 ? a.nthreads : 1;
  uint32_t words_or = 0;
#pragma omp parallel num_threads(nt) reduction(| : words_or)
  {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < a.M; ++m) {  // quantize as quantize_panel; padding past K is zero
      const float* xr = a.x + m * a.K;
      __m512 mx = _mm512_setzero_ps();
      __mmask16 nonfinite = 0;
      for (int64_t k = 0; k < a.K; k += 16) {
        const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(first(a.K - k), xr + k));
        nonfinite |= nonfinite_lanes(v);
        mx = _mm512_max_ps(mx, v);
      }
      const float scale = nonfinite ? __builtin_nanf("") : _mm512_reduce_max_ps(mx) / 127.f;
      xs[m] = scale;
      const __m512 vs = _mm512_set1_ps(scale > 0.f ? scale : 1.f);
      __m512i sum = _mm512_setzero_si512();
      for (int64_t k = 0; k < Kp; k += 16) {
        const __m512 v = scale > 0.f && k < a.K ? _mm512_maskz_loadu_ps(first(a.K - k), xr + k) : _mm512_setzero_ps();
        const __m512i qi = _mm512_cvtps_epi32(_mm512_div_ps(v, vs));  // |qi| <= 127: no saturation below
        sum = _mm512_add_epi32(sum, qi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + m * Kp + k), _mm512_cvtsepi32_epi8(qi));
      }
      for (int64_t k = 0; k < Kp; k += 64)  // into the expanded weights' order
        _mm512_storeu_si512(xq + m * Kp + k, permute_chunk(e, _mm512_loadu_si512(xq + m * Kp + k)));
      xsum[m] = _mm512_reduce_add_epi32(sum);
    }
#pragma omp for schedule(static)
    for (int64_t n0 = 0; n0 < a.N; n0 += 2) {
      const int64_t valid = imin(2, a.N - n0);
      if (a.field == 1)
        vnni_pair<1>(a, e, xq, Kp, xs, xsum, nch, n0, valid, words_or);
      else if (a.field == 2)
        vnni_pair<2>(a, e, xq, Kp, xs, xsum, nch, n0, valid, words_or);
      else
        vnni_pair<4>(a, e, xq, Kp, xs, xsum, nch, n0, valid, words_or);
    }
  }
  *a.words_or |= words_or;
}

// M <= 32 (one or two 16-row activation panels): each chunk of a 32-row weight block expands
// into two tiles in L1 right before their products, and the accumulator tiles stay in the tile
// registers over the whole K. (Expanding a whole block first and reading it back, as at larger
// M, sends it through L2: about 1.4 times slower at M = 8, K = N = 4096.)
template <int F>
SK_AMX static void small_m_block(const CodebookQ8Args& a, const RowExpander& e, const int8_t* qbuf, int64_t nch,
                                 bool two, int64_t n0, int64_t np, int8_t* pt, int32_t* c, uint32_t& words_or) {
  __m512i tbl[32];
  const uint8_t* src[32];
  const int8_t* qcb[32];
  for (int64_t i = 0; i < 32; ++i) {
    if (i < np) {
      qcb[i] = a.qcodebook + ((n0 + i) / a.group_size) * 16;
      src[i] = reinterpret_cast<const uint8_t*>(a.idx + (n0 + i) * a.Wd);
      tbl[i] = make_table(e, qcb[i], 0);
    } else {
      _mm512_store_si512(pt + 64 * i, _mm512_setzero_si512());  // row i % 16 of tile i / 16
    }
  }
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t full = imin(e.row_bytes / (8 * F), nch);
  __m512i seen = _mm512_setzero_si512();
  for (int64_t ch = 0; ch < nch; ++ch) {
    for (int64_t i = 0; i < np; ++i) {
      const __m512i w = ch < full ? expand_chunk<F, true>(e, src[i], ch, tbl[i], qcb[i], 0, seen)
                                  : expand_chunk<F, false>(e, src[i], ch, tbl[i], qcb[i], 0, seen);
      _mm512_store_si512(pt + 64 * i, w);
    }
    tile_step(pt, pt + kTile, qbuf + ch * kTile, two ? qbuf + (nch + ch) * kTile : nullptr);
  }
  store_accumulators(c);
  words_or |= static_cast<uint32_t>(_mm512_reduce_or_epi32(seen));
}

// The VNNI path at every M: the int8 option on AVX-512 CPUs with VNNI and VBMI but no AMX
// (codebook/register.cpp selects it for the avx512vp level where the CPU has both). No tile instruction here.
SK_AMX void codebook_linear_q8_vnni(const CodebookQ8Args& a) {
  if (a.M == 0 || a.N == 0) return;
  codebook_q8_vnni(a);
}

SK_AMX void codebook_linear_q8(const CodebookQ8Args& a) {
  if (a.M == 0 || a.N == 0) return;
  const int64_t nch = (a.K + 63) / 64;
  // K = 0 too: no chunk to put in a tile, and the block size below divides by nch
  if (a.M <= kVnniMaxRows || nch == 0) return codebook_q8_vnni(a);
  const int nt = a.nthreads > 0 ? a.nthreads : 1;
  const int64_t q_block = imin((a.M + 31) / 32 * 32, std::max<int64_t>(32, kCbQBytes / (nch * 64) / 32 * 32));
  const int64_t pairs = q_block / 32, p_blocks = (a.N + 31) / 32;
  // with a single pair of activation panels (M <= 32) a weight block is expanded whole (2 x nch KB,
  // L2): its accumulators then never go back to memory between steps (measured faster at M = 8)
  const bool small = pairs == 1;  // M <= 32: small_m_block
  const int64_t kstep = small ? 1 : kKWords;
  const int64_t q_bytes = q_block * nch * 64, p_bytes = 2 * kstep * kTile, c_bytes = pairs * 32 * 32 * 4;
  const int64_t t_bytes = p_bytes + c_bytes + 2 * 2 * 32 * 4;  // + per-row scale and bias of a weight block
  int8_t* buf = scratch(q_bytes + q_block * 4 + nt * t_bytes);
  int8_t* qbuf = buf;
  float* xs = reinterpret_cast<float*>(buf + q_bytes);
  int8_t* tbuf = buf + q_bytes + q_block * 4;
  const RowExpander e = make_expander(a.field, a.bits, a.Wd);
  uint32_t words_or = 0;
#pragma omp parallel num_threads(nt) reduction(| : words_or)
  {
    configure_tiles();
    int8_t* pt = tbuf + omp_get_thread_num() * t_bytes;
    int32_t* c = reinterpret_cast<int32_t*>(pt + p_bytes);
    float* cs = reinterpret_cast<float*>(pt + p_bytes + c_bytes);  // [32] centroid scale, [32] bias
    float* bs = cs + 64;
    alignas(64) int32_t ni[16];
    for (int i = 0; i < 16; ++i) ni[i] = i * 32;
    const __m512i col_stride = _mm512_load_si512(ni);
    for (int64_t q0 = 0; q0 < a.M; q0 += q_block) {
      const int64_t qn = imin(q_block, a.M - q0), panels = small && qn <= 16 ? 1 : (qn + 31) / 32 * 2;
#pragma omp for schedule(static)
      for (int64_t s = 0; s < panels; ++s)
        quantize_panel(e, a.x + (q0 + 16 * s) * a.K, a.K, nch, imin(16, qn - 16 * s), xs + 16 * s,
                       qbuf + s * nch * kTile);
#pragma omp for schedule(dynamic)
      for (int64_t pb = 0; pb < p_blocks; ++pb) {
        const int64_t n0 = pb * 32, np = imin(32, a.N - n0);
        if (small && a.field == 1)
          small_m_block<1>(a, e, qbuf, nch, panels == 2, n0, np, pt, c, words_or);
        else if (small && a.field == 2)
          small_m_block<2>(a, e, qbuf, nch, panels == 2, n0, np, pt, c, words_or);
        else if (small)
          small_m_block<4>(a, e, qbuf, nch, panels == 2, n0, np, pt, c, words_or);
        for (int64_t c0 = 0; !small && c0 < nch; c0 += kstep) {
          const int64_t kw = imin(kstep, nch - c0);
          if (a.field == 1)
            expand_weight_rows<1>(a, e, n0, np, c0, kw, pt, words_or);
          else if (a.field == 2)
            expand_weight_rows<2>(a, e, n0, np, c0, kw, pt, words_or);
          else
            expand_weight_rows<4>(a, e, n0, np, c0, kw, pt, words_or);
          for (int64_t s = 0; s < panels; s += 2)
            tile_block(pt, qbuf + (s * nch + c0) * kTile, qbuf + ((s + 1) * nch + c0) * kTile, kw, c0 > 0,
                       c + (s / 2) * 1024);
        }
        for (int64_t i = 0; i < 32; ++i) {
          cs[i] = i < np ? a.cscale[(n0 + i) / a.group_size] : 0.f;
          bs[i] = i < np && a.bias ? a.bias[n0 + i] : 0.f;
        }
        for (int64_t s = 0; s < panels; s += 2)
          for (int64_t j = 0; j < imin(32, qn - 16 * s); ++j) {  // activation row m: 32 weight rows at once
            const int64_t m = q0 + 16 * s + j;
            const int32_t* cj = c + (s / 2) * 1024 + j;
            const __m512 sm = _mm512_set1_ps(xs[16 * s + j]);
            SK_UNROLL
            for (int h = 0; h < 2; ++h) {
              if (16 * h >= np) break;
              const __m512 acc = _mm512_cvtepi32_ps(_mm512_i32gather_epi32(col_stride, cj + 16 * h * 32, 4));
              const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(sm, _mm512_loadu_ps(cs + 16 * h)), acc),
                                             _mm512_loadu_ps(bs + 16 * h));
              _mm512_mask_storeu_ps(a.y + m * a.N + n0 + 16 * h, first(np - 16 * h), v);
            }
          }
      }
    }
    _tile_release();
  }
  *a.words_or |= words_or;
}

#else
void codebook_linear_q8(const CodebookQ8Args&) {}  // never selected off x86
void codebook_linear_q8_vnni(const CodebookQ8Args&) {}
#endif

}  // namespace amx
}  // namespace sk
