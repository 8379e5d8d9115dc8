// The XNOR GEMM on the AMX tile unit (Sapphire Rapids and later): the +-1 vectors expanded to
// int8 +-1 tile by tile, about three times the VPOPCNTDQ kernel's rate on the same core. The
// packed operands stay packed in memory; only the tiles in flight are int8. Shared tile helpers:
// common/amx.h; the codebook int8 option on the tiles: codebook/kernel_amx.cpp.
//
// common/isa.cpp selects the amx level only on a CPU that reports AMX-TILE/AMX-INT8 and
// AVX512-VBMI, an OS that enables the tile state, and after Linux granted it (arch_prctl
// ARCH_REQ_XCOMP_PERM). Every other binary kernel of this level is the avx512 one, and so is the
// XNOR GEMM below kMinRows rows.
//
// Layout. The product is C[i, j] = sum_k P[i, k] * Q[j, k], P and Q being a and b (an [M, N]
// output) or b and a (a convolution's output, whose pixels m are contiguous per channel n:
// C's rows then run along the output). P is expanded row-major into 16-row x 64-byte tiles,
// one tile per 64-bit word of K; Q into the VNNI tiles TDPBSSD reads, where tile row r holds
// elements 4r .. 4r+3 of each of 16 rows of Q. Padding bits past K expand to 0 on the P side,
// so they add nothing whatever the Q side holds; padding rows are never stored.
#include "binary/args.h"
#include "common/kernel_prelude.h"

#include <algorithm>

#include "common/amx.h"

namespace sk {
namespace amx {

#if defined(__x86_64__)
constexpr int64_t kMinRows = 96;         // fewer activation rows: the VPOPCNTDQ kernel is faster (measured)
constexpr int64_t kQBlockBytes = 1280 << 10;  // Q rows expanded at a time: they stay in L2

SK_AMX static inline __m512i pm1(__mmask64 bits) {
  return _mm512_mask_blend_epi8(bits, _mm512_set1_epi8(-1), _mm512_set1_epi8(1));
}

// Words w0 .. w0+kw-1 of 32 rows of P (rows >= valid are zero) into [2][kw][16][64]; the bits
// past K in the last word of a row expand to 0.
SK_AMX static void expand_rows(const uint64_t* src, int64_t W, int64_t valid, int64_t w0, int64_t kw,
                               uint64_t last_mask, int8_t* dst) {
  const __mmask64 last = _cvtu64_mask64(w0 + kw == W ? last_mask : ~uint64_t(0));
  for (int64_t i = 0; i < 32; ++i) {
    int8_t* row = dst + (i / 16) * kw * kTile + (i % 16) * 64;
    if (i >= valid) {
      for (int64_t w = 0; w < kw; ++w) _mm512_store_si512(row + w * kTile, _mm512_setzero_si512());
      continue;
    }
    const uint64_t* s = src + i * W + w0;
    for (int64_t w = 0; w + 1 < kw; ++w) _mm512_store_si512(row + w * kTile, pm1(_cvtu64_mask64(s[w])));
    _mm512_store_si512(row + (kw - 1) * kTile, _mm512_maskz_mov_epi8(last, pm1(_cvtu64_mask64(s[kw - 1]))));
  }
}

// 16 rows of Q (rows >= valid read as zero words) into VNNI tiles [W][16][64]: byte 4n + j of
// tile row r is bit 4r + j of row n's word, i.e. bit 4(r % 2) + j of byte 8n + r / 2 of the 16
// words side by side. One byte permute serves two tile rows; a bit test and a blend make each.
SK_AMX static void expand_vnni(const uint64_t* src, int64_t W, int64_t valid, int8_t* dst) {
  alignas(64) uint64_t words[16];
  alignas(64) int8_t idx_bytes[64], lo_bytes[64], hi_bytes[64];
  for (int b = 0; b < 64; ++b) {
    idx_bytes[b] = static_cast<int8_t>(8 * (b / 4));
    lo_bytes[b] = static_cast<int8_t>(1 << (b % 4));
    hi_bytes[b] = static_cast<int8_t>(1 << (4 + b % 4));
  }
  const __m512i idx0 = _mm512_load_si512(idx_bytes), sel_lo = _mm512_load_si512(lo_bytes),
                sel_hi = _mm512_load_si512(hi_bytes);
  for (int64_t w = 0; w < W; ++w) {
    for (int64_t n = 0; n < 16; ++n) words[n] = n < valid ? src[n * W + w] : 0;
    const __m512i z0 = _mm512_load_si512(words), z1 = _mm512_load_si512(words + 8);
    int8_t* t = dst + w * kTile;
    SK_UNROLL
    for (int rr = 0; rr < 8; ++rr) {
      const __m512i g = _mm512_permutex2var_epi8(z0, _mm512_add_epi8(idx0, _mm512_set1_epi8(rr)), z1);
      _mm512_store_si512(t + (2 * rr) * 64, pm1(_mm512_test_epi8_mask(g, sel_lo)));
      _mm512_store_si512(t + (2 * rr + 1) * 64, pm1(_mm512_test_epi8_mask(g, sel_hi)));
    }
  }
}


// dst[0 .. n) = (c + corr) * scale (* row_scale[0 .. n)) + add, n <= 16
SK_AMX static inline void store_run(float* dst, const int32_t* c, __m512i corr, int64_t n, __m512 scale,
                                    const float* row_scale, __m512 add) {
  const __mmask16 k = first(n);
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_maskz_loadu_epi32(k, c), corr)), scale);
  if (row_scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, row_scale));
  _mm512_mask_storeu_ps(dst, k, _mm512_add_ps(v, add));
}

// Writes the np x nq valid corner of C for P rows p0.. and Q rows q0... C sums +-1 products
// over every unmasked bit, (W - 1) * 64 + last_bits of them; the op's result is K - 2 * (the
// disagreeing bits), which differs by the unmasked padding bits (zero, hence agreeing, in both
// operands, as in a convolution's per-tap channel padding): corr = K - unmasked bits.
SK_AMX static void epilogue(const XnorGemmArgs& g, bool swap, int64_t p0, int64_t np, int64_t q0, int64_t nq,
                            const int32_t* c) {
  const __m512i corr = _mm512_set1_epi32(static_cast<int32_t>(g.K - ((g.W - 1) * 64 + g.last_bits)));
  if (!swap) {  // rows m = p0 + i, columns n = q0 + j of an [M, N] output
    for (int64_t i = 0; i < np; ++i) {
      const int64_t m = p0 + i;
      const int32_t* ci = c + i * 32;
      for (int64_t j = 0; j < nq; j += 16) {
        const int64_t n = q0 + j, len = imin(16, nq - j);
        const __mmask16 k = first(len);
        if (g.out_f == nullptr) {
          _mm512_mask_storeu_epi32(g.out + m * g.N + n, k, _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, ci + j), corr));
          continue;
        }
        __m512 scale = _mm512_maskz_loadu_ps(k, g.col_scale + n);
        if (g.row_scale) scale = _mm512_mul_ps(scale, _mm512_set1_ps(g.row_scale[m]));
        const __m512 add = g.bias ? _mm512_maskz_loadu_ps(k, g.bias + n) : _mm512_setzero_ps();
        store_run(g.out_f + m * g.N + n, ci + j, corr, len, scale, nullptr, add);
      }
    }
    return;
  }
  // rows n = p0 + i (channels), columns m = q0 + j (pixels) of an NCHW output; a run of
  // pixels is contiguous until it crosses into the next image
  const int64_t hw = g.out_hw;
  for (int64_t i = 0; i < np; ++i) {
    const int64_t n = p0 + i;
    const __m512 scale = _mm512_set1_ps(g.col_scale[n]), add = _mm512_set1_ps(g.bias ? g.bias[n] : 0.f);
    for (int64_t j = 0; j < nq;) {
      const int64_t m = q0 + j, len = imin(imin(16, nq - j), hw - m % hw);
      store_run(g.out_f + (m / hw) * g.N * hw + n * hw + m % hw, c + i * 32 + j, corr, len, scale,
                g.row_scale ? g.row_scale + m : nullptr, add);
      j += len;
    }
  }
}


bool takes(int64_t M, int64_t N, bool conv_out, int nthreads) {
  const int64_t q_rows = conv_out ? M : N;
  return M >= kMinRows && q_rows >= 32 * std::max(nthreads, 1);
}

SK_AMX void xnor_gemm(const XnorGemmArgs& g) {
  if (g.M == 0 || g.N == 0) return;
  // A convolution writes NCHW (out_hw > 0, float out): P = the weights so C's rows run along pixels.
  const bool swap = g.out_hw > 0 && g.out_f != nullptr;
  const int nt = g.nthreads > 0 ? g.nthreads : 1;
  const int64_t p_rows = swap ? g.N : g.M, q_rows = swap ? g.M : g.N;
  // (rows of no words, K = 0: nothing for the tiles to multiply, and the block sizes below divide by W)
  if (!takes(g.M, g.N, swap, nt) || (g.out_hw > 0 && !swap) || g.W == 0) return avx512vp::xnor_gemm(g);
  const int64_t W = g.W;
  const uint64_t* P = swap ? g.b : g.a;
  const uint64_t* Q = swap ? g.a : g.b;
  // Threads split Q into blocks, each expanded once into the thread's own buffer (L2) and run
  // against every P block: expanded data never moves between cores. P is expanded kKWords words
  // at a time (L1); the C tiles of a block wait in memory between those steps.
  const int64_t q_per_thread = (q_rows + nt - 1) / nt;
  const int64_t q_block = imin((q_per_thread + 31) / 32 * 32, std::max<int64_t>(32, kQBlockBytes / (W * 64) / 32 * 32));
  const int64_t q_blocks = (q_rows + q_block - 1) / q_block, p_blocks = (p_rows + 31) / 32;
  const int64_t q_bytes = q_block * W * 64, p_bytes = 2 * kKWords * kTile, c_bytes = (q_block / 32) * 32 * 32 * 4;
  const int64_t t_bytes = q_bytes + p_bytes + c_bytes;
  int8_t* buf = scratch(nt * t_bytes);
  const uint64_t last_mask = low_bits_mask(g.last_bits);
#pragma omp parallel num_threads(nt)
  {
    configure_tiles();
    int8_t* qbuf = buf + omp_get_thread_num() * t_bytes;
    int8_t* pt = qbuf + q_bytes;
    int32_t* c = reinterpret_cast<int32_t*>(pt + p_bytes);
#pragma omp for schedule(dynamic)
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      const int64_t q0 = qb * q_block, qn = imin(q_block, q_rows - q0), panels = (qn + 31) / 32 * 2;
      for (int64_t s = 0; s < panels; ++s)
        expand_vnni(Q + (q0 + 16 * s) * W, W, imin(16, qn - 16 * s), qbuf + s * W * kTile);
      for (int64_t pb = 0; pb < p_blocks; ++pb) {
        const int64_t p0 = pb * 32, np = imin(32, p_rows - p0);
        for (int64_t w0 = 0; w0 < W; w0 += kKWords) {
          const int64_t kw = imin(kKWords, W - w0);
          expand_rows(P + p0 * W, W, np, w0, kw, last_mask, pt);
          for (int64_t s = 0; s < panels; s += 2)
            tile_block(pt, qbuf + (s * W + w0) * kTile, qbuf + ((s + 1) * W + w0) * kTile, kw, w0 > 0,
                       c + (s / 2) * 1024);
        }
        for (int64_t s = 0; s < panels; s += 2)
          epilogue(g, swap, p0, np, q0 + 16 * s, imin(32, qn - 16 * s), c + (s / 2) * 1024);
      }
    }
    _tile_release();
  }
}

#else
bool takes(int64_t, int64_t, bool, int) { return false; }
void xnor_gemm(const XnorGemmArgs&) {}  // never selected off x86
#endif

}  // namespace amx
}  // namespace sk
