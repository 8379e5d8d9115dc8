// Block-sparse (BSR) linear kernels, written once with GCC/Clang vector extensions
// and compiled once per instruction set (block_sparse/kernel_<isa>.cpp, through
// common/instantiate.h, inside the ISA's namespace with SK_VW floats per vector).
//
// Everything here is `static` so that no symbol compiled for one ISA can be
// merged with, or called in place of, another ISA's copy.
//
// Two paths:
//  * small M (memory bound): every weight row is streamed once and dotted with the
//    M activation rows, vectorised along K.
//  * large M (compute bound): activations are packed per panel of MP rows into a
//    zero-padded, transposed panel Xt[Kp][MP] that stays in L2. Each block row of W
//    is then processed block by block: an SK_NR x (SK_MR * SK_VW) register micro-kernel
//    broadcasts one weight and multiplies a vector of activations, accumulating into
//    a bh x MP tile that stays in L1 with the block's slice of the panel; the tile is
//    stored transposed into y once the row is done.
// Block rows are scheduled dynamically over the OpenMP threads, so rows with many
// blocks do not hold the others back.

#include "common/vec.h"

// ---------------------------------------------------------------- small M

// IR weight rows x MC activation rows of accumulators, vectors of W floats along K.
template <int IR, int MC, int W>
static void small_rows(const BsrLinearArgs& a, const float* xp, int64_t Kp, int64_t r, int64_t i0, int64_t m0) {
  typedef Vec<W> V;
  typedef typename V::type vw;
  const int64_t bw = a.bw, bh = a.bh;
  const int32_t b0 = a.row_off[r], b1 = a.row_off[r + 1];
  const int64_t kv = bw - bw % W;
  vw acc[IR][MC];
  float tail[IR][MC];
  SK_UNROLL
  for (int i = 0; i < IR; ++i)
    SK_UNROLL
    for (int m = 0; m < MC; ++m) {
      acc[i][m] = vw{};
      tail[i][m] = 0.f;
    }
  for (int32_t b = b0; b < b1; ++b) {
    const float* B = a.values + ((int64_t)b * bh + i0) * bw;
    const float* X = xp + m0 * Kp + (int64_t)a.cols[b] * bw;
    for (int64_t k = 0; k < kv; k += W) {
      vw xv[MC];
      SK_UNROLL
      for (int m = 0; m < MC; ++m) xv[m] = V::load(X + m * Kp + k);
      SK_UNROLL
      for (int i = 0; i < IR; ++i) {
        vw w = V::load(B + i * bw + k);
        SK_UNROLL
        for (int m = 0; m < MC; ++m) acc[i][m] += w * xv[m];
      }
    }
    for (int64_t k = kv; k < bw; ++k)
      SK_UNROLL
      for (int i = 0; i < IR; ++i)
        SK_UNROLL
        for (int m = 0; m < MC; ++m) tail[i][m] += B[i * bw + k] * X[m * Kp + k];
  }
  SK_UNROLL
  for (int i = 0; i < IR; ++i) {
    const int64_t n = r * bh + i0 + i;
    if (n >= a.N) break;
    const float bias = a.bias ? a.bias[n] : 0.f;
    SK_UNROLL
    for (int m = 0; m < MC; ++m) a.y[(m0 + m) * a.N + n] = V::sum(acc[i][m]) + tail[i][m] + bias;
  }
}

template <int IR, int W>
static void small_rows_all_m(const BsrLinearArgs& a, const float* xp, int64_t Kp, int64_t r, int64_t i0) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) small_rows<IR, 4, W>(a, xp, Kp, r, i0, m);
  for (; m + 2 <= a.M; m += 2) small_rows<IR, 2, W>(a, xp, Kp, r, i0, m);
  for (; m < a.M; ++m) small_rows<IR, 1, W>(a, xp, Kp, r, i0, m);
}

template <int W>
static void small_block_row(const BsrLinearArgs& a, const float* xp, int64_t Kp, int64_t r) {
  const int64_t rows = imin(a.bh, a.N - r * a.bh);
  int64_t i = 0;
  if (a.M <= 2)
    for (; i + 8 <= rows; i += 8) small_rows_all_m<8, W>(a, xp, Kp, r, i);
  for (; i + 4 <= rows; i += 4) small_rows_all_m<4, W>(a, xp, Kp, r, i);
  for (; i < rows; ++i) small_rows_all_m<1, W>(a, xp, Kp, r, i);
}

// xp: activations padded to Kp columns (zeros past K). Vectors as wide as the block
// width allows (8 x 8 blocks on AVX-512 use 8-float vectors, not a scalar tail), and
// thin block rows scheduled several at a time so that scheduling does not dominate.
static void bsr_small_m(const BsrLinearArgs& a, const float* xp, int64_t Kp) {
  const int64_t chunk = a.bh >= 16 ? 1 : 16 / a.bh;
  const int width = a.bw % SK_VW == 0 ? SK_VW : (SK_VW > 8 && a.bw % 8 == 0) ? 8 : (SK_VW > 4 && a.bw % 4 == 0) ? 4 : SK_VW;
#pragma omp parallel for schedule(dynamic, chunk) num_threads(a.nthreads)
  for (int64_t r = 0; r < a.Nb; ++r) {
    if (width == SK_VW)
      small_block_row<SK_VW>(a, xp, Kp, r);
    else if (width == 8)
      small_block_row<(SK_VW > 8 ? 8 : SK_VW)>(a, xp, Kp, r);
    else
      small_block_row<4>(a, xp, Kp, r);
  }
}

// ---------------------------------------------------------------- large M
constexpr int MR = SK_MR;         // vectors along m per micro-tile
constexpr int MT = MR * SK_VW;    // m per micro-tile
constexpr int64_t MP = kBsrPanel;  // m per packed panel
static_assert(MP % MT == 0, "the packed panel must hold a whole number of micro-tiles");

constexpr int64_t NT = MP / MT;    // micro-tiles per panel

// The packed panel holds, for each block column c and micro-tile t, the bw x MT slice
// Xp[c][t][k][l] = x[m0 + t*MT + l][c*bw + k] contiguously, so a block's slice streams
// from L2 in order.
static inline const float* panel_slice(const float* xp, int64_t c, int64_t t, int64_t bw) {
  return xp + (c * NT + t) * bw * MT;
}

// yt[i][t*MT + j] = sum over the stored blocks b of row r of B_b[n0 + i][:] . Xp[c_b][t][:][j],
// for i < NR: the accumulators stay in registers across every block of the row.
template <int NR>
static inline void micro_row(const BsrLinearArgs& a, const float* xp, int64_t r, int64_t n0, int64_t t,
                             float* yt) {
  const int64_t bw = a.bw, bh = a.bh;
  vf acc[NR][MR];
  SK_UNROLL
  for (int i = 0; i < NR; ++i)
    SK_UNROLL
    for (int q = 0; q < MR; ++q) acc[i][q] = vf{};
  const int32_t b1 = a.row_off[r + 1];
  for (int32_t b = a.row_off[r]; b < b1; ++b) {
    const float* B = a.values + ((int64_t)b * bh + n0) * bw;
    const float* X = panel_slice(xp, a.cols[b], t, bw);
    // the next block's slice lies elsewhere in the panel: fetch it while this one computes
    const float* Xn = panel_slice(xp, a.cols[b + 1 < b1 ? b + 1 : b], t, bw);
    for (int64_t k = 0; k < bw; ++k) {
      for (int q = 0; q < MT; q += 16) __builtin_prefetch(Xn + k * MT + q);
      vf xv[MR];
      SK_UNROLL
      for (int q = 0; q < MR; ++q) xv[q] = vload(X + k * MT + q * SK_VW);
      SK_UNROLL
      for (int i = 0; i < NR; ++i) {
        vf w = vsplat(B[i * bw + k]);
        SK_UNROLL
        for (int q = 0; q < MR; ++q) acc[i][q] += w * xv[q];
      }
    }
  }
  SK_UNROLL
  for (int i = 0; i < NR; ++i)
    SK_UNROLL
    for (int q = 0; q < MR; ++q) vstore(yt + (n0 + i) * MP + t * MT + q * SK_VW, acc[i][q]);
}

// Block row r against the packed panel, into the transposed output tile yr[bh][MP].
static void block_row_panel(const BsrLinearArgs& a, const float* xp, float* yr, int64_t r, int64_t mp) {
  const int64_t bh = a.bh;
  const int64_t tend = (mp + MT - 1) / MT;
  // micro-tiles innermost: the weight rows of one pass stay in L1 for all of them
  int64_t n0 = 0;
  for (; n0 + SK_NR <= bh; n0 += SK_NR)
    for (int64_t t = 0; t < tend; ++t) micro_row<SK_NR>(a, xp, r, n0, t, yr);
  for (; SK_NR > 8 && n0 + 8 <= bh; n0 += 8)
    for (int64_t t = 0; t < tend; ++t) micro_row<8>(a, xp, r, n0, t, yr);
  for (; SK_NR > 4 && n0 + 4 <= bh; n0 += 4)
    for (int64_t t = 0; t < tend; ++t) micro_row<4>(a, xp, r, n0, t, yr);
  for (; SK_NR > 2 && n0 + 2 <= bh; n0 += 2)
    for (int64_t t = 0; t < tend; ++t) micro_row<2>(a, xp, r, n0, t, yr);
  for (; n0 < bh; ++n0)
    for (int64_t t = 0; t < tend; ++t) micro_row<1>(a, xp, r, n0, t, yr);
}

// Packs block column c of panel m0 (mp valid rows), zero past M and K; 8 x 8 tiles in registers.
static void pack_block_column(const BsrLinearArgs& a, float* xp, int64_t c, int64_t m0, int64_t mp) {
  const int64_t bw = a.bw;
  for (int64_t t = 0; t < NT; ++t) {
    float* dst = xp + (c * NT + t) * bw * MT;
    for (int64_t l0 = 0; l0 < MT; l0 += 8) {
      const int64_t m = m0 + t * MT + l0;  // first of 8 rows of x
      int64_t k0 = 0;
      if (t * MT + l0 + 8 <= mp)
        for (; k0 + 8 <= bw && c * bw + k0 + 8 <= a.K; k0 += 8)
          transpose8x8(a.x + m * a.K + c * bw + k0, a.K, dst + k0 * MT + l0, MT);
      for (int64_t l = 0; l < 8; ++l) {
        const bool row_ok = t * MT + l0 + l < mp;
        for (int64_t k = k0; k < bw; ++k) {
          const int64_t kk = c * bw + k;
          dst[k * MT + l0 + l] = (row_ok && kk < a.K) ? a.x[(m + l) * a.K + kk] : 0.f;
        }
      }
    }
  }
}

// y[m0 + j][n] = yt[n - n0][j] + bias[n] for panel rows j0 .. j0+7 and columns n0 .. n1-1.
static void store_rows(const BsrLinearArgs& a, const float* yt, int64_t m0, int64_t mp, int64_t j0, int64_t n0,
                       int64_t n1) {
  const int64_t N = a.N;
  const bool full = j0 + 8 <= mp;
  int64_t n = n0;
  if (full)
    for (; n + 8 <= n1; n += 8) transpose8x8(yt + (n - n0) * MP + j0, MP, a.y + (m0 + j0) * N + n, N);
  for (int64_t j = j0; j < j0 + 8 && j < mp; ++j)
    for (int64_t nn = (full ? n : n0); nn < n1; ++nn) a.y[(m0 + j) * N + nn] = yt[(nn - n0) * MP + j];
  if (a.bias)
    for (int64_t j = j0; j < j0 + 8 && j < mp; ++j)
      for (int64_t nn = n0; nn < n1; ++nn) a.y[(m0 + j) * N + nn] += a.bias[nn];
}

// Block rows per chunk when a thread owns a whole panel: the chunk's transposed output
// (about 256 x MP floats) stays in L2 next to the packed panel.
static int64_t rows_per_chunk(int64_t bh) { return 256 / bh + (256 % bh != 0); }  // ceil(256 / bh), no 256 + bh

// work: per thread, Kp*MP floats for a packed panel and Np*MP for transposed output.
// With enough panels and a weight that stays cache-resident, each thread takes whole
// panels (its panel stays in its own L2, threads never wait for each other) and stores
// its output in chunks of block rows: about 10% faster at 90% sparsity. Otherwise all
// threads share each panel, splitting the packing, the block rows and the store, which
// was faster for large weights (32 MB at 50% of 4096 x 4096: by 5-10%).
constexpr int64_t kPrivatePanelMaxWeightBytes = int64_t(16) << 20;

static void bsr_large_m(const BsrLinearArgs& a, float* work) {
  const int64_t Kp = a.Kb * a.bw, Np = a.Nb * a.bh, bh = a.bh;
  const int64_t panels = (a.M + MP - 1) / MP;
  const int64_t weight_bytes = int64_t(a.row_off[a.Nb]) * a.bh * a.bw * int64_t(sizeof(float));
  if (panels >= 2 * a.nthreads && weight_bytes <= kPrivatePanelMaxWeightBytes) {
#pragma omp parallel num_threads(a.nthreads)
    {
      float* xp = work + (int64_t)omp_get_thread_num() * (Kp + Np) * MP;
      float* yt = xp + Kp * MP;
      const int64_t chunk = rows_per_chunk(bh);
#pragma omp for schedule(dynamic, 1)
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t m0 = p * MP, mp = imin(MP, a.M - m0);
        for (int64_t c = 0; c < a.Kb; ++c) pack_block_column(a, xp, c, m0, mp);
        for (int64_t r0 = 0; r0 < a.Nb; r0 += chunk) {
          const int64_t r1 = imin(a.Nb, r0 + chunk);
          for (int64_t r = r0; r < r1; ++r) block_row_panel(a, xp, yt + (r - r0) * bh * MP, r, mp);
          for (int64_t j0 = 0; j0 < mp; j0 += 8) store_rows(a, yt, m0, mp, j0, r0 * bh, imin(a.N, r1 * bh));
        }
      }
    }
    return;
  }
  float* xp = work;
  float* yt = work + Kp * MP;
  for (int64_t m0 = 0; m0 < a.M; m0 += MP) {
    const int64_t mp = imin(MP, a.M - m0);
#pragma omp parallel num_threads(a.nthreads)
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < a.Kb; ++c) pack_block_column(a, xp, c, m0, mp);
#pragma omp for schedule(dynamic, bh >= 16 ? 1 : 16 / bh)
      for (int64_t r = 0; r < a.Nb; ++r) block_row_panel(a, xp, yt + r * bh * MP, r, mp);
#pragma omp for schedule(static)
      for (int64_t j0 = 0; j0 < mp; j0 += 8) store_rows(a, yt, m0, mp, j0, 0, a.N);
    }
  }
}

// ---------------------------------------------------------------- entry
// a.work must hold bsr_linear_workspace(a) floats (computed by the dispatcher).
void bsr_linear(const BsrLinearArgs& a) {
  const int64_t Kp = a.Kb * a.bw;
  if (a.M == 0 || a.N == 0) return;
  if (a.M <= a.small_m) {
    float* xp = a.work;
    for (int64_t m = 0; m < a.M; ++m) {
      __builtin_memcpy(xp + m * Kp, a.x + m * a.K, sizeof(float) * (uint64_t)a.K);
      for (int64_t k = a.K; k < Kp; ++k) xp[m * Kp + k] = 0.f;
    }
    bsr_small_m(a, xp, Kp);
  } else {
    bsr_large_m(a, a.work);
  }
}
