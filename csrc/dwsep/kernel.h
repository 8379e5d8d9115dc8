// Fused depthwise -> pointwise convolution (fp32), written once and compiled per ISA (see
// dwsep/kernel_<isa>.cpp: include only there, inside the ISA namespace; the vector helpers vf /
// vload / vstore / vsplat come from common/vec.h).
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

#include "common/vec.h"

// the pointwise micro-kernel's register block: DW_R rows x DW_NV vectors of accumulators
#ifndef DW_R
#if SK_VW == 16
#define DW_R 6
#define DW_NV 4
#else
#define DW_R SK_NR
#define DW_NV SK_MR
#endif
#endif

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
  for (; r + DW_R <= rows; r += DW_R)
    dw_micro<DW_R, NV>(A + r * lda, lda, B, ldb, K, C + r * ldc, ldc, ncols, brow ? brow + r : nullptr, bcol, act);
  dw_tail<NV, DW_R - 1>(rows - r, A + r * lda, lda, B, ldb, K, C + r * ldc, ldc, ncols, brow ? brow + r : nullptr,
                         bcol, act);
}

// B in panels: column j, row k at B[(j / DW_PANEL) * K * DW_PANEL + k * DW_PANEL + j % DW_PANEL], the
// columns past the product's zero to a whole panel. A panel's rows are then contiguous: with a
// long row stride (C_out = 512: 2 KB) the rows of a column block fall into a few L1 sets and
// evict each other (measured: 73 -> 89 GFMA/s per core at K = C_out = 512).
constexpr int64_t DW_PANEL = 64;  // a multiple of every ISA's DW_NV * SK_VW (64, 16, 8)

// C [rows][cols] (row stride ldc) = act(A [rows][K] . B [K][cols] (panels) + biases)
static void dw_gemm(const float* A, int64_t lda, const float* B, int64_t K, float* C, int64_t ldc, int64_t rows,
                    int64_t cols, const float* brow, const float* bcol, int act) {
  constexpr int64_t NC = DW_NV * SK_VW;
  static_assert(DW_PANEL % NC == 0, "a column block lies inside one panel");
  for (int64_t j0 = 0; j0 < cols; j0 += NC) {  // a column block of B, reused by every row block
    const int64_t nc = imin(NC, cols - j0), nv = (nc + SK_VW - 1) / SK_VW;
    const float* bc = bcol ? bcol + j0 : nullptr;
    const float* Bj = B + (j0 / DW_PANEL) * K * DW_PANEL + j0 % DW_PANEL;
    if (nv == DW_NV)
      dw_rows<DW_NV>(A, lda, Bj, DW_PANEL, K, C + j0, ldc, rows, nc, brow, bc, act);
    else if (nv >= 3)
      dw_rows<3>(A, lda, Bj, DW_PANEL, K, C + j0, ldc, rows, nc, brow, bc, act);
    else if (nv == 2)
      dw_rows<2>(A, lda, Bj, DW_PANEL, K, C + j0, ldc, rows, nc, brow, bc, act);
    else
      dw_rows<1>(A, lda, Bj, DW_PANEL, K, C + j0, ldc, rows, nc, brow, bc, act);
  }
}

// acc + the depthwise taps of output pixel (oh, ow) whose inputs lie inside the image:
// x(q) loads the input of pixel q (row-major in the image), w(t) the weight of tap t.
template <typename T, typename X, typename Wt>
static inline T dw_taps(const DwsepArgs& a, int64_t oh, int64_t ow, T acc, X x, Wt w) {
  for (int64_t i = 0; i < a.kh; ++i) {
    const int64_t ih = oh * a.sh - a.ph + i * a.dh;
    if (ih < 0 || ih >= a.H) continue;
    for (int64_t j = 0; j < a.kw; ++j) {
      const int64_t iw = ow * a.sw - a.pw + j * a.dw;
      if (iw < 0 || iw >= a.W) continue;
      acc += x(ih * a.W + iw) * w(i * a.kw + j);
    }
  }
  return acc;
}

// One output pixel's depthwise output, channels [c0, C) in vectors then [Cv, C) one by one.
static inline void dw_pixel(const DwsepArgs& a, const float* src, const float* wdt, int64_t Cs, int64_t oh,
                            int64_t ow, int64_t c0, float* dp) {
  const int64_t C = a.C, Cv = C - C % SK_VW;
  for (int64_t c = c0; c < Cv; c += SK_VW) {
    const vf acc = dw_taps(
        a, oh, ow, a.bd ? vload(a.bd + c) : vf{}, [&](int64_t q) { return vload(src + q * C + c); },
        [&](int64_t t) { return vload(wdt + t * Cs + c); });
    vstore(dp + c, dw_act(acc, a.act1));
  }
  for (int64_t c = Cv > c0 ? Cv : c0; c < C; ++c) {
    const float acc = dw_taps(a, oh, ow, a.bd ? a.bd[c] : 0.f, [&](int64_t q) { return src[q * C + c]; },
                              [&](int64_t t) { return wdt[t * Cs + c]; });
    dp[c] = dw_act1(acc, a.act1);
  }
}

// RB output pixels ow .. ow + RB - 1 of row oh whose taps all lie inside the row (only rows
// may be cut off by padding), one channel vector c: the accumulators stay in registers and each
// input vector is loaded once per tap.
constexpr int DR = 8;   // pixels per block (4, 2, 1 for the rest of a row's interior)
constexpr int DKW = 7;  // widest kernel row whose inputs are loaded once (registers: DR + DKW - 1)
template <int RB>
static inline void dw_block(const DwsepArgs& a, const float* src, const float* wdt, int64_t Cs, int64_t oh,
                            int64_t ow, int64_t c, float* dp) {
  vf acc[RB];
  const vf b = a.bd ? vload(a.bd + c) : vf{};
  SK_UNROLL
  for (int r = 0; r < RB; ++r) acc[r] = b;
  const bool unit = a.sw == 1 && a.dw == 1 && a.kw <= DKW;  // neighbouring taps share inputs
  for (int64_t i = 0; i < a.kh; ++i) {
    const int64_t ih = oh * a.sh - a.ph + i * a.dh;
    if (ih < 0 || ih >= a.H) continue;
    const float* srow = src + (ih * a.W + ow * a.sw - a.pw) * a.C + c;
    if (unit) {  // the RB + kw - 1 inputs of the row once each
      vf in[RB + DKW - 1];
      SK_UNROLL
      for (int q = 0; q < RB + DKW - 1; ++q)
        if (q < RB + a.kw - 1) in[q] = vload(srow + q * a.C);
      SK_UNROLL
      for (int j = 0; j < DKW; ++j) {
        if (j >= a.kw) break;
        const vf w = vload(wdt + (i * a.kw + j) * Cs + c);
        SK_UNROLL
        for (int r = 0; r < RB; ++r) acc[r] += in[r + j] * w;
      }
      continue;
    }
    for (int64_t j = 0; j < a.kw; ++j) {
      const vf w = vload(wdt + (i * a.kw + j) * Cs + c);
      const float* s = srow + j * a.dw * a.C;
      SK_UNROLL
      for (int r = 0; r < RB; ++r) acc[r] += vload(s + r * a.sw * a.C) * w;
    }
  }
  SK_UNROLL
  for (int r = 0; r < RB; ++r) vstore(dp + r * a.C + c, dw_act(acc[r], a.act1));
}

// pixels ow .. ow + RB - 1 (interior) of row oh, every channel: vector blocks, then the
// channels past the last whole vector pixel by pixel
template <int RB>
static inline void dw_blocks(const DwsepArgs& a, const float* src, const float* wdt, int64_t Cs, int64_t oh,
                             int64_t ow, float* dp) {
  const int64_t C = a.C, Cv = C - C % SK_VW;
  for (int64_t c = 0; c < Cv; c += SK_VW) dw_block<RB>(a, src, wdt, Cs, oh, ow, c, dp);
  if (Cv < C)
    for (int64_t r = 0; r < RB; ++r) dw_pixel(a, src, wdt, Cs, oh, ow + r, Cv, dp + r * C);
}

// dst[c * ds + r] = src[r * ss + c] for r < rows, c < cols (rows <= 8), in 8 x 8 register
// transposes (transpose8x8) where a whole block fits, element by element at the edge.
static void dw_transpose(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows, int64_t cols) {
  int64_t c = 0;
  if (rows == 8)
    for (; c + 8 <= cols; c += 8) transpose8x8(src + c, ss, dst + c * ds, ds);
  for (; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * ds + r] = src[r * ss + c];
}

// Depthwise output of pixels [p0, p0 + P) of one image (src: [H][W][C]) into d [P][C], row
// piece by row piece: blocks of 8, 4, 2, 1 pixels where no column tap falls in the padding, one
// pixel at a time (with column checks) elsewhere.
static void dw_depthwise(const DwsepArgs& a, const float* src, const float* wdt, int64_t Cs, int64_t p0, int64_t P,
                         float* d) {
  const int64_t C = a.C, Cv = C - C % SK_VW;
  // columns whose taps are all inside the row: ow_lo <= ow <= ow_hi (ow_lo = ceil(pw / sw), which
  // pw + sw - 1 could overflow for a huge stride)
  const int64_t ow_lo = a.pw / a.sw + (a.pw % a.sw != 0);
  const int64_t span = a.W - 1 + a.pw - (a.kw - 1) * a.dw;
  const int64_t ow_hi = span < 0 ? -1 : span / a.sw;
  for (int64_t p = p0; p < p0 + P;) {
    const int64_t oh = p / a.OW, ow0 = p % a.OW, ow1 = imin(a.OW, ow0 + (p0 + P - p));
    float* drow = d + (p - p0) * C;
    int64_t ow = ow0;
    for (; ow < ow1 && ow < ow_lo; ++ow) dw_pixel(a, src, wdt, Cs, oh, ow, 0, drow + (ow - ow0) * C);
    const int64_t end = imin(ow1, ow_hi + 1);  // interior pixels of this piece: [ow, end)
    for (; ow + DR <= end; ow += DR) dw_blocks<DR>(a, src, wdt, Cs, oh, ow, drow + (ow - ow0) * C);
    if (ow + 4 <= end) dw_blocks<4>(a, src, wdt, Cs, oh, ow, drow + (ow - ow0) * C), ow += 4;
    if (ow + 2 <= end) dw_blocks<2>(a, src, wdt, Cs, oh, ow, drow + (ow - ow0) * C), ow += 2;
    if (ow + 1 <= end) dw_blocks<1>(a, src, wdt, Cs, oh, ow, drow + (ow - ow0) * C), ow += 1;
    for (; ow < ow1; ++ow) dw_pixel(a, src, wdt, Cs, oh, ow, 0, drow + (ow - ow0) * C);
    p += ow1 - ow0;
  }
}

void dwsep_conv2d(const DwsepArgs& a) {
  const int64_t OHW = a.OH * a.OW, HW = a.H * a.W, C = a.C, Co = a.Co, taps = a.kh * a.kw;
  if (a.N == 0 || OHW == 0 || Co == 0) return;
  const int nt = a.nthreads > 0 ? a.nthreads : 1;
  const int64_t Cs = (C + SK_VW - 1) / SK_VW * SK_VW, Cop = (Co + DW_PANEL - 1) / DW_PANEL * DW_PANEL;
  // pixels per tile: the tile's depthwise output at most about 64 KB (L2), but never fewer than
  // one pixel block (past 16384 channels a single pixel's output is larger than that); the
  // tiles of all images a multiple of the thread count, at least 2 per thread where the images
  // allow (no thread idles for a last tile); a multiple of the micro-kernel's pixel block
  // (channels_last: rows of DW_R pixels; NCHW: vectors of pixels)
  const int64_t g = a.nhwc ? DW_R : SK_VW;
  const int64_t P_max = imin(OHW, imax(g, (16384 / C + g - 1) / g * g));
  int64_t per_image = (OHW + P_max - 1) / P_max;
  while (a.N * per_image < 2 * nt && per_image < (OHW + g - 1) / g) ++per_image;
  while ((a.N * per_image) % nt != 0 && per_image < (OHW + g - 1) / g) ++per_image;
  const int64_t P = imin(OHW, ((OHW + per_image - 1) / per_image + g - 1) / g * g);
  const int64_t Pp = (P + DW_PANEL - 1) / DW_PANEL * DW_PANEL, tiles = (OHW + P - 1) / P;
  // shared: depthwise weights [taps][Cs]; channels_last: WpT [C][Cop] (unless the caller passes
  // it), bias [Cop]; NCHW: the image
  const bool own_wpt = a.nhwc && a.wpt == nullptr;
  const int64_t shared = taps * Cs + (a.nhwc ? (own_wpt ? C * Cop : 0) + Cop : HW * C);
  float* sh = static_cast<float*>(thread_scratch(sizeof(float) * shared, 0));
  float* wdt = sh;
  float* wpt = sh + taps * Cs;  // channels_last only
  float* bcol = wpt + (own_wpt ? C * Cop : 0);  // channels_last only
  const float* wpt_in = own_wpt ? wpt : a.wpt;
  float* img = sh + taps * Cs;  // NCHW only
  const int64_t per = P * C + (a.nhwc ? 0 : C * Pp);
  float* tb = static_cast<float*>(thread_scratch(sizeof(float) * per * nt, 1));
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) wdt[t * Cs + c] = a.wd[c * taps + t];
    if (own_wpt) {
#pragma omp for schedule(static)
      for (int64_t c0 = 0; c0 < C; c0 += 16) {  // WpT in panels, 16 x 16 blocks (the weight read by rows)
        const int64_t c1 = imin(C, c0 + 16);
        for (int64_t o0 = 0; o0 < Cop; o0 += 16)
          for (int64_t o = o0; o < o0 + 16; ++o)
            for (int64_t c = c0; c < c1; ++c)
              wpt[(o / DW_PANEL) * C * DW_PANEL + c * DW_PANEL + o % DW_PANEL] = o < Co ? a.wp[o * C + c] : 0.f;
      }
    }
    if (a.nhwc) {
#pragma omp single
      for (int64_t o = 0; o < Cop; ++o) bcol[o] = a.bp && o < Co ? a.bp[o] : 0.f;
    }
    float* d = tb + per * omp_get_thread_num();
    float* dt = d + P * C;  // NCHW only
    for (int64_t n = 0; n < a.N; ++n) {
      const float* src = a.x + n * HW * C;
      if (!a.nhwc) {  // the image to [H][W][C]
#pragma omp for schedule(static)
        for (int64_t q0 = 0; q0 < HW; q0 += 64)  // 64 pixels x 8 channels at a time
          for (int64_t c0 = 0; c0 < C; c0 += 8)
            dw_transpose(src + c0 * HW + q0, HW, img + q0 * C + c0, C, imin(8, C - c0), imin(64, HW - q0));
        src = img;
      }
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t p0 = t * P, np = imin(P, OHW - p0);
        dw_depthwise(a, src, wdt, Cs, p0, np, d);
        if (a.nhwc) {
          dw_gemm(d, C, wpt_in, C, a.y + (n * OHW + p0) * Co, Co, np, Co, nullptr, a.bp ? bcol : nullptr, a.act2);
        } else {  // D transposed into panels of DW_PANEL pixels
          const int64_t npp = (np + DW_PANEL - 1) / DW_PANEL * DW_PANEL;
          for (int64_t q0 = 0; q0 < npp; q0 += DW_PANEL)
            for (int64_t p = q0; p < q0 + DW_PANEL; p += 8) {
              if (p < np) {
                dw_transpose(d + p * C, C, dt + q0 * C + (p - q0), DW_PANEL, imin(8, np - p), C);
              } else {
                for (int64_t c = 0; c < C; ++c)
                  for (int64_t i = 0; i < 8; ++i) dt[q0 * C + c * DW_PANEL + (p - q0) + i] = 0.f;
              }
              for (int64_t i = np - p; i > 0 && i < 8; ++i)  // a partial last block: zero its other columns
                for (int64_t c = 0; c < C; ++c) dt[q0 * C + c * DW_PANEL + (p - q0) + i] = 0.f;
            }
          dw_gemm(a.wp, C, dt, C, a.y + n * Co * OHW + p0, OHW, Co, np, a.bp, nullptr, a.act2);
        }
      }
    }
  }
}
