// Fused depthwise -> pointwise convolution (fp32), written once and compiled per ISA (see
// isa_*.cpp; include only there, inside the ISA namespace, after block_sparse_impl.h, whose
// vector helpers vf / vload / vstore / vsplat it uses).
//
// The output pixels of an image are cut into tiles of P consecutive pixels (row-major, so a
// tile may span rows). For each tile the depthwise k x k output D [P][C] is computed into a
// per-thread buffer that stays in L2 (vectorised along the channels, which channels_last
// memory holds contiguously; an NCHW image is first transposed to that layout once), passes
// through act1, and feeds a register-blocked GEMM micro-kernel for the pointwise 1 x 1
// convolution, whose bias and act2 are applied as the accumulators are stored. The depthwise
// output never goes to memory beyond the tile.
//  * channels_last output: Y [P][Co] = D [P][C] . WpT [C][Co] (rows: pixels);
//  * NCHW output:          Y [Co][P] = Wp [Co][C] . Dt [C][P] (rows: output channels), D
//    transposed per tile so that every stored vector runs along the pixels.

#include "kernel_util.h"

// act: 0 identity, 1 ReLU, 2 ReLU6, 3 SiLU
static inline vf dw_act(vf v, int act) {
  if (act == 1) return v < vf{} ? vf{} : v;
  if (act == 2) {
    v = v < vf{} ? vf{} : v;
    return v > vsplat(6.f) ? vsplat(6.f) : v;
  }
  if (act == 3)
    for (int i = 0; i < SK_VW; ++i) v[i] = v[i] / (1.f + __builtin_expf(-v[i]));
  return v;
}
static inline float dw_act1(float v, int act) {
  if (act == 1) return v < 0.f ? 0.f : v;
  if (act == 2) return v < 0.f ? 0.f : (v > 6.f ? 6.f : v);
  if (act == 3) return v / (1.f + __builtin_expf(-v));
  return v;
}

// C[r * ldc + j] = act(sum_k A[r * lda + k] * B[k * ldb + j] + brow[r] + bcol[j]) for r < R and
// j < ncols (<= NV * SK_VW); B and bcol readable for NV * SK_VW columns; brow/bcol may be null.
template <int R, int NV>
static inline void dw_micro(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C,
                            int64_t ldc, int64_t ncols, const float* brow, const float* bcol, int act) {
  vf acc[R][NV];
  SK_UNROLL
  for (int r = 0; r < R; ++r)
    SK_UNROLL
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  for (int64_t k = 0; k < K; ++k) {
    vf b[NV];
    SK_UNROLL
    for (int v = 0; v < NV; ++v) b[v] = vload(B + k * ldb + v * SK_VW);
    SK_UNROLL
    for (int r = 0; r < R; ++r) {
      const vf a = vsplat(A[r * lda + k]);
      SK_UNROLL
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  SK_UNROLL
  for (int r = 0; r < R; ++r)
    SK_UNROLL
    for (int v = 0; v < NV; ++v) {
      vf out = acc[r][v];
      if (brow) out += vsplat(brow[r]);
      if (bcol) out += vload(bcol + v * SK_VW);
      out = dw_act(out, act);
      const int64_t j0 = v * SK_VW;
      if (j0 + SK_VW <= ncols) {
        vstore(C + r * ldc + j0, out);
      } else {
        for (int64_t j = j0; j < ncols; ++j) C[r * ldc + j] = out[j - j0];
      }
    }
}

// the last rows (< SK_NR) of a product: one block of exactly that many rows
template <int NV, int R>
static inline void dw_tail(int64_t rows, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K,
                           float* C, int64_t ldc, int64_t ncols, const float* brow, const float* bcol, int act) {
  if constexpr (R > 0) {
    if (rows == R) return dw_micro<R, NV>(A, lda, B, ldb, K, C, ldc, ncols, brow, bcol, act);
    dw_tail<NV, R - 1>(rows, A, lda, B, ldb, K, C, ldc, ncols, brow, bcol, act);
  }
}

// rows [0, rows) of the product above, SK_NR at a time
template <int NV>
static void dw_rows(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C, int64_t ldc,
                    int64_t rows, int64_t ncols, const float* brow, const float* bcol, int act) {
  int64_t r = 0;
  for (; r + SK_NR <= rows; r += SK_NR)
    dw_micro<SK_NR, NV>(A + r * lda, lda, B, ldb, K, C + r * ldc, ldc, ncols, brow ? brow + r : nullptr, bcol, act);
  dw_tail<NV, SK_NR - 1>(rows - r, A + r * lda, lda, B, ldb, K, C + r * ldc, ldc, ncols, brow ? brow + r : nullptr,
                         bcol, act);
}

// C [rows][cols] (row stride ldc) = act(A [rows][K] . B [K][cols padded to SK_MR vectors] + biases)
static void dw_gemm(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* C, int64_t ldc,
                    int64_t rows, int64_t cols, const float* brow, const float* bcol, int act) {
  constexpr int64_t NC = SK_MR * SK_VW;
  for (int64_t j0 = 0; j0 < cols; j0 += NC) {  // a column panel of B, reused by every row block
    const int64_t nc = imin(NC, cols - j0);
    if (nc > (SK_MR - 1) * SK_VW)
      dw_rows<SK_MR>(A, lda, B + j0, ldb, K, C + j0, ldc, rows, nc, brow, bcol ? bcol + j0 : nullptr, act);
    else
      dw_rows<1>(A, lda, B + j0, ldb, K, C + j0, ldc, rows, nc, brow, bcol ? bcol + j0 : nullptr, act);
  }
}

// Depthwise output of pixels [p0, p0 + P) of one image (src: [H][W][C]) into d [P][C].
static void dw_depthwise(const DwsepArgs& a, const float* src, const float* wdt, int64_t Cs, int64_t p0, int64_t P,
                         float* d) {
  const int64_t C = a.C, Cv = C - C % SK_VW;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t oh = (p0 + p) / a.OW, ow = (p0 + p) % a.OW;
    float* dp = d + p * C;
    for (int64_t c = 0; c < Cv; c += SK_VW) {
      vf acc = a.bd ? vload(a.bd + c) : vf{};
      for (int64_t i = 0; i < a.kh; ++i) {
        const int64_t ih = oh * a.sh - a.ph + i * a.dh;
        if (ih < 0 || ih >= a.H) continue;
        for (int64_t j = 0; j < a.kw; ++j) {
          const int64_t iw = ow * a.sw - a.pw + j * a.dw;
          if (iw < 0 || iw >= a.W) continue;
          acc += vload(src + (ih * a.W + iw) * C + c) * vload(wdt + (i * a.kw + j) * Cs + c);
        }
      }
      vstore(dp + c, dw_act(acc, a.act1));
    }
    for (int64_t c = Cv; c < C; ++c) {
      float acc = a.bd ? a.bd[c] : 0.f;
      for (int64_t i = 0; i < a.kh; ++i) {
        const int64_t ih = oh * a.sh - a.ph + i * a.dh;
        if (ih < 0 || ih >= a.H) continue;
        for (int64_t j = 0; j < a.kw; ++j) {
          const int64_t iw = ow * a.sw - a.pw + j * a.dw;
          if (iw < 0 || iw >= a.W) continue;
          acc += src[(ih * a.W + iw) * C + c] * wdt[(i * a.kw + j) * Cs + c];
        }
      }
      dp[c] = dw_act1(acc, a.act1);
    }
  }
}

void dwsep_conv2d(const DwsepArgs& a) {
  const int64_t OHW = a.OH * a.OW, HW = a.H * a.W, C = a.C, Co = a.Co, taps = a.kh * a.kw;
  if (a.N == 0 || OHW == 0 || Co == 0) return;
  constexpr int64_t NC = SK_MR * SK_VW;
  const int nt = a.nthreads > 0 ? a.nthreads : 1;
  const int64_t Cs = (C + SK_VW - 1) / SK_VW * SK_VW, Cop = (Co + NC - 1) / NC * NC;
  // pixels per tile, a multiple of 48 (whole register blocks of pixels, whole vectors): the
  // tile's depthwise output about 64 KB (L2), and at least 4 tiles per thread where possible
  int64_t P = (16384 / C + 47) / 48 * 48;
  const int64_t spread = ((a.N * OHW + 4 * nt - 1) / (4 * nt) + 47) / 48 * 48;
  P = imin(imin(P, spread), OHW);
  const int64_t Pp = (P + NC - 1) / NC * NC, tiles = (OHW + P - 1) / P;
  // shared: depthwise weights [taps][Cs]; channels_last: WpT [C][Cop], bias [Cop]; NCHW: the image
  const int64_t shared = taps * Cs + (a.nhwc ? C * Cop + Cop : HW * C);
  float* sh = static_cast<float*>(thread_scratch(sizeof(float) * shared, 0));
  float* wdt = sh;
  float* wpt = sh + taps * Cs;  // channels_last only
  float* bcol = wpt + C * Cop;  // channels_last only
  float* img = sh + taps * Cs;  // NCHW only
  const int64_t per = P * C + (a.nhwc ? 0 : C * Pp);
  float* tb = static_cast<float*>(thread_scratch(sizeof(float) * per * nt, 1));
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) wdt[t * Cs + c] = a.wd[c * taps + t];
    if (a.nhwc) {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t o = 0; o < Co; ++o) wpt[c * Cop + o] = a.wp[o * C + c];
        for (int64_t o = Co; o < Cop; ++o) wpt[c * Cop + o] = 0.f;
      }
#pragma omp single
      for (int64_t o = 0; o < Cop; ++o) bcol[o] = a.bp && o < Co ? a.bp[o] : 0.f;
    }
    float* d = tb + per * omp_get_thread_num();
    float* dt = d + P * C;  // NCHW only
    for (int64_t n = 0; n < a.N; ++n) {
      const float* src = a.x + n * HW * C;
      if (!a.nhwc) {  // the image to [H][W][C], 16 x 16 blocks
#pragma omp for schedule(static)
        for (int64_t q0 = 0; q0 < HW; q0 += 16)
          for (int64_t c0 = 0; c0 < C; c0 += 16)
            for (int64_t c = c0; c < imin(C, c0 + 16); ++c)
              for (int64_t q = q0; q < imin(HW, q0 + 16); ++q) img[q * C + c] = src[c * HW + q];
        src = img;
      }
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t p0 = t * P, np = imin(P, OHW - p0);
        dw_depthwise(a, src, wdt, Cs, p0, np, d);
        if (a.nhwc) {
          dw_gemm(d, C, wpt, Cop, C, a.y + (n * OHW + p0) * Co, Co, np, Co, nullptr, a.bp ? bcol : nullptr,
                  a.act2);
        } else {
          const int64_t npp = (np + NC - 1) / NC * NC;
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t p = 0; p < np; ++p) dt[c * npp + p] = d[p * C + c];
            for (int64_t p = np; p < npp; ++p) dt[c * npp + p] = 0.f;
          }
          dw_gemm(a.wp, C, dt, npp, C, a.y + n * Co * OHW + p0, OHW, Co, np, a.bp, nullptr, a.act2);
        }
      }
    }
  }
}
