// Block-sparse (BSR) linear kernels, written once with GCC/Clang vector extensions
// and compiled once per instruction set (see isa_*.cpp). Include only from those
// files, inside their ISA namespace, after SK_VW (floats per vector) is defined.
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

typedef float vf __attribute__((vector_size(SK_VW * 4), aligned(4)));

static inline vf vload(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
// s - (+0) is exactly s for every s (unlike s + 0 for s = -0), so the compiler folds the
// subtraction and emits a plain broadcast, from memory where s is loaded.
static inline vf vsplat(float s) { return s - vf{}; }
static inline float vsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < SK_VW; ++i) s += v[i];
  return s;
}
static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------- small M
// IR weight rows x MC activation rows of accumulators.
template <int IR, int MC>
static void small_rows(const BsrLinearArgs& a, const float* xp, int64_t Kp, int64_t r, int64_t i0, int64_t m0) {
  const int64_t bw = a.bw, bh = a.bh;
  const int32_t b0 = a.row_off[r], b1 = a.row_off[r + 1];
  const int64_t kv = bw - bw % SK_VW;
  vf acc[IR][MC];
  float tail[IR][MC];
  for (int i = 0; i < IR; ++i)
    for (int m = 0; m < MC; ++m) {
      acc[i][m] = vf{};
      tail[i][m] = 0.f;
    }
  for (int32_t b = b0; b < b1; ++b) {
    const float* B = a.values + ((int64_t)b * bh + i0) * bw;
    const float* X = xp + m0 * Kp + (int64_t)a.cols[b] * bw;
    for (int64_t k = 0; k < kv; k += SK_VW) {
      vf xv[MC];
      for (int m = 0; m < MC; ++m) xv[m] = vload(X + m * Kp + k);
      for (int i = 0; i < IR; ++i) {
        vf w = vload(B + i * bw + k);
        for (int m = 0; m < MC; ++m) acc[i][m] += w * xv[m];
      }
    }
    for (int64_t k = kv; k < bw; ++k)
      for (int i = 0; i < IR; ++i)
        for (int m = 0; m < MC; ++m) tail[i][m] += B[i * bw + k] * X[m * Kp + k];
  }
  for (int i = 0; i < IR; ++i) {
    const int64_t n = r * bh + i0 + i;
    if (n >= a.N) break;
    const float bias = a.bias ? a.bias[n] : 0.f;
    for (int m = 0; m < MC; ++m) a.y[(m0 + m) * a.N + n] = vsum(acc[i][m]) + tail[i][m] + bias;
  }
}

template <int IR>
static void small_rows_all_m(const BsrLinearArgs& a, const float* xp, int64_t Kp, int64_t r, int64_t i0) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) small_rows<IR, 4>(a, xp, Kp, r, i0, m);
  for (; m + 2 <= a.M; m += 2) small_rows<IR, 2>(a, xp, Kp, r, i0, m);
  for (; m < a.M; ++m) small_rows<IR, 1>(a, xp, Kp, r, i0, m);
}

// xp: activations padded to Kp columns (zeros past K).
static void bsr_small_m(const BsrLinearArgs& a, const float* xp, int64_t Kp) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(a.nthreads)
  for (int64_t r = 0; r < a.Nb; ++r) {
    const int64_t rows = imin(a.bh, a.N - r * a.bh);
    int64_t i = 0;
    if (a.M <= 2) {
      for (; i + 8 <= rows; i += 8) small_rows_all_m<8>(a, xp, Kp, r, i);
    }
    for (; i + 4 <= rows; i += 4) small_rows_all_m<4>(a, xp, Kp, r, i);
    for (; i < rows; ++i) small_rows_all_m<1>(a, xp, Kp, r, i);
  }
}

// ---------------------------------------------------------------- large M
constexpr int MR = SK_MR;         // vectors along m per micro-tile
constexpr int MT = MR * SK_VW;    // m per micro-tile
constexpr int64_t MP = kBsrPanel;  // m per packed panel
static_assert(MP % MT == 0, "the packed panel must hold a whole number of micro-tiles");

// c[NR][MP] (an L1-resident accumulator tile, row stride MP) += B[NR][bw] x Xt[bw][MT].
template <int NR>
static inline void micro(float* c, const float* B, int64_t bw, const float* X) {
  vf acc[NR][MR];
  for (int i = 0; i < NR; ++i)
    for (int q = 0; q < MR; ++q) acc[i][q] = vload(c + i * MP + q * SK_VW);
  for (int64_t k = 0; k < bw; ++k) {
    vf xv[MR];
    for (int q = 0; q < MR; ++q) xv[q] = vload(X + k * MP + q * SK_VW);
    for (int i = 0; i < NR; ++i) {
      vf w = vsplat(B[i * bw + k]);
      for (int q = 0; q < MR; ++q) acc[i][q] += w * xv[q];
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int q = 0; q < MR; ++q) __builtin_memcpy(c + i * MP + q * SK_VW, &acc[i][q], sizeof(vf));
}

// One block row r against the packed panel: block by block, so each block's slice of the
// panel (bw x MP) and the accumulator tile (bh x MP) stay in L1 across all micro-tiles.
static void block_row_panel(const BsrLinearArgs& a, const float* xt, float* ctile, int64_t r, int64_t m0,
                            int64_t mp) {
  const int64_t bw = a.bw, bh = a.bh;
  const int64_t jend = (mp + MT - 1) / MT * MT;
  for (int64_t t = 0; t < bh * MP; ++t) ctile[t] = 0.f;
  for (int32_t b = a.row_off[r]; b < a.row_off[r + 1]; ++b) {
    const float* blk = a.values + (int64_t)b * bh * bw;
    const float* X = xt + (int64_t)a.cols[b] * bw * MP;
    int64_t n0 = 0;
    for (; n0 + SK_NR <= bh; n0 += SK_NR)
      for (int64_t j0 = 0; j0 < jend; j0 += MT) micro<SK_NR>(ctile + n0 * MP + j0, blk + n0 * bw, bw, X + j0);
    for (; SK_NR > 4 && n0 + 4 <= bh; n0 += 4)
      for (int64_t j0 = 0; j0 < jend; j0 += MT) micro<4>(ctile + n0 * MP + j0, blk + n0 * bw, bw, X + j0);
    for (; SK_NR > 2 && n0 + 2 <= bh; n0 += 2)
      for (int64_t j0 = 0; j0 < jend; j0 += MT) micro<2>(ctile + n0 * MP + j0, blk + n0 * bw, bw, X + j0);
    for (; n0 < bh; ++n0)
      for (int64_t j0 = 0; j0 < jend; j0 += MT) micro<1>(ctile + n0 * MP + j0, blk + n0 * bw, bw, X + j0);
  }
  // transposed store: y[m0 + j, r*bh + i] = ctile[i][j] + bias
  const int64_t nbase = r * bh;
  const int64_t rows = imin(bh, a.N - nbase);
  for (int64_t j = 0; j < mp; ++j) {
    float* yrow = a.y + (m0 + j) * a.N + nbase;
    for (int64_t i = 0; i < rows; ++i) yrow[i] = ctile[i * MP + j] + (a.bias ? a.bias[nbase + i] : 0.f);
  }
}

// work: Kp*MP floats for the packed panel, then nthreads * bh * MP for accumulator tiles.
static void bsr_large_m(const BsrLinearArgs& a, float* work) {
  const int64_t Kp = a.Kb * a.bw;
  float* xt = work;
  for (int64_t m0 = 0; m0 < a.M; m0 += MP) {
    const int64_t mp = imin(MP, a.M - m0);
#pragma omp parallel num_threads(a.nthreads)
    {
      // pack Xt[k][j] = x[m0 + j][k] (zero past M and K): contiguous writes, MP rows read at once
#pragma omp for schedule(static)
      for (int64_t k0 = 0; k0 < Kp; k0 += 16) {
        for (int64_t k = k0; k < k0 + 16 && k < Kp; ++k) {
          float* dst = xt + k * MP;
          if (k >= a.K) {
            for (int64_t j = 0; j < MP; ++j) dst[j] = 0.f;
            continue;
          }
          for (int64_t j = 0; j < mp; ++j) dst[j] = a.x[(m0 + j) * a.K + k];
          for (int64_t j = mp; j < MP; ++j) dst[j] = 0.f;
        }
      }
      float* ctile = work + Kp * MP + (int64_t)omp_get_thread_num() * a.bh * MP;
#pragma omp for schedule(dynamic, 1)
      for (int64_t r = 0; r < a.Nb; ++r) block_row_panel(a, xt, ctile, r, m0, mp);
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
