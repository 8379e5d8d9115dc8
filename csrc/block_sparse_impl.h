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
//    zero-padded, transposed panel Xt[Kp][MP] that stays in L2; each block row of W
//    then runs a register-blocked NR x (MR*VW) micro-kernel that broadcasts one weight
//    and multiplies a vector of activations, accumulating over every stored block of
//    the row before a single transposed store into y.
// Block rows are scheduled dynamically over the OpenMP threads, so rows with many
// blocks do not hold the others back.

typedef float vf __attribute__((vector_size(SK_VW * 4), aligned(4)));

static inline vf vload(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
static inline vf vsplat(float s) { return vf{} + s; }
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
constexpr int MR = 2;             // vectors along m per micro-tile
constexpr int MT = MR * SK_VW;    // m per micro-tile
constexpr int64_t MP = kBsrPanel;  // m per packed panel (a multiple of MT for every VW)

// NR weight rows x MT activation rows, accumulated over all blocks of block row r.
template <int NR>
static void micro(const BsrLinearArgs& a, const float* xt, int64_t r, int64_t n0, int64_t j0, int64_t m0,
                  int64_t mp) {
  const int64_t bw = a.bw, bh = a.bh;
  const int32_t b0 = a.row_off[r], b1 = a.row_off[r + 1];
  vf acc[NR][MR];
  for (int i = 0; i < NR; ++i)
    for (int q = 0; q < MR; ++q) acc[i][q] = vf{};
  for (int32_t b = b0; b < b1; ++b) {
    const float* B = a.values + ((int64_t)b * bh + n0) * bw;
    const float* X = xt + (int64_t)a.cols[b] * bw * MP + j0;
    for (int64_t k = 0; k < bw; ++k) {
      vf xv[MR];
      for (int q = 0; q < MR; ++q) xv[q] = vload(X + k * MP + q * SK_VW);
      for (int i = 0; i < NR; ++i) {
        vf w = vsplat(B[i * bw + k]);
        for (int q = 0; q < MR; ++q) acc[i][q] += w * xv[q];
      }
    }
  }
  // transposed store: y[m0 + j0 + j, r*bh + n0 + i]
  float tile[MT][NR];
  for (int i = 0; i < NR; ++i)
    for (int q = 0; q < MR; ++q)
      for (int l = 0; l < SK_VW; ++l) tile[q * SK_VW + l][i] = acc[i][q][l];
  const int64_t nbase = r * bh + n0;
  const int64_t nvalid = imin(NR, a.N - nbase);
  const int64_t jvalid = imin(MT, mp - j0);
  for (int64_t j = 0; j < jvalid; ++j) {
    float* yrow = a.y + (m0 + j0 + j) * a.N + nbase;
    for (int64_t i = 0; i < nvalid; ++i) yrow[i] = tile[j][i] + (a.bias ? a.bias[nbase + i] : 0.f);
  }
}

static void bsr_large_m(const BsrLinearArgs& a, float* xt) {
  const int64_t Kp = a.Kb * a.bw;
  for (int64_t m0 = 0; m0 < a.M; m0 += MP) {
    const int64_t mp = imin(MP, a.M - m0);
#pragma omp parallel num_threads(a.nthreads)
    {
      // pack Xt[k][j] = x[m0 + j][k], zero outside the matrix
#pragma omp for schedule(static)
      for (int64_t k0 = 0; k0 < Kp; k0 += 64) {
        const int64_t k1 = imin(k0 + 64, Kp);
        for (int64_t j = 0; j < MP; ++j) {
          const float* xr = a.x + (m0 + j) * a.K;
          for (int64_t k = k0; k < k1; ++k) xt[k * MP + j] = (j < mp && k < a.K) ? xr[k] : 0.f;
        }
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t r = 0; r < a.Nb; ++r) {
        const int64_t rows = imin(a.bh, a.N - r * a.bh);
        for (int64_t j0 = 0; j0 < mp; j0 += MT) {
          int64_t n0 = 0;
          for (; n0 + 8 <= rows; n0 += 8) micro<8>(a, xt, r, n0, j0, m0, mp);
          for (; n0 + 4 <= rows; n0 += 4) micro<4>(a, xt, r, n0, j0, m0, mp);
          for (; n0 < rows; ++n0) micro<1>(a, xt, r, n0, j0, m0, mp);
        }
      }
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
