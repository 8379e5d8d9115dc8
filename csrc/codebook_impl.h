// Codebook matmul (k-means weight clustering), written once and compiled per ISA (see
// isa_*.cpp; include only there, inside the ISA namespace, after xnor_impl.h).
//
// AVX-512: table lookup on the indices (lut_impl.h). A 4-bit lookup group ("nibble") holds
// 4 / field indices; its table is the 16 sums sum_i codebook[v_i] * x[k_i] over the values the
// nibble can take, built per activation row and per codebook group with one FMA per index, so
// a VPERMPS does 16 rows x (4 / field) multiply-accumulates: 64 at 1 bit, 32 at 2 bits, 16 at
// 3-4 bits. Other ISAs decode each weight row to floats once and take dot products.
// Fields wider than `bits` (3-bit indices in 4-bit fields) use their low `bits` bits.

#if SK_VW == 16
// tables of words [w0, w1) of activation row x for codebook row cb (2^bits entries)
static void build_codebook_tables(const CodebookLinearArgs& a, const float* x, const float* cb, int64_t w0,
                                  int64_t w1, float* tables) {
  const int64_t f = a.field, ipn = 4 / f, per = 32 / f, emask = (int64_t{1} << a.bits) - 1;
  f16v C[4];  // C[i][v]: the centroid the i-th index of nibble value v selects
  for (int64_t i = 0; i < ipn; ++i)
    for (int v = 0; v < 16; ++v) C[i][v] = cb[(v >> (f * i)) & ((1 << f) - 1) & emask];
  for (int64_t w = w0; w < w1; ++w)
    for (int64_t j = 0; j < 8; ++j) {
      const int64_t k0 = w * per + j * ipn;
      f16v acc = f16v{};
      for (int64_t i = 0; i < ipn; ++i) acc += C[i] * (k0 + i < a.K ? x[k0 + i] : 0.f);
      *reinterpret_cast<f16u*>(tables + (w * 8 + j) * 16) = acc;
    }
}

void codebook_linear(const CodebookLinearArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  constexpr int64_t MC = 4;
  const int64_t tstride = a.Wd * 8 * 16, G = (a.N + a.group_size - 1) / a.group_size, ncb = int64_t{1} << a.bits;
  static thread_local std::vector<float> tables;
  if (tables.size() < static_cast<std::size_t>(MC * tstride)) tables.resize(MC * tstride);
  float* tb = tables.data();
#pragma omp parallel num_threads(a.nthreads)
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = g * a.group_size, r1 = imin(a.N, r0 + a.group_size), tiles = (r1 - r0 + 15) / 16;
    for (int64_t m0 = 0; m0 < a.M; m0 += MC) {
      const int64_t mc = imin(MC, a.M - m0);
#pragma omp for schedule(static)
      for (int64_t c = 0; c < mc * 8; ++c) {  // each row's tables in 8 slices
        const int64_t m = c / 8, w0 = (c % 8) * a.Wd / 8, w1 = (c % 8 + 1) * a.Wd / 8;
        build_codebook_tables(a, a.x + (m0 + m) * a.K, a.codebook + g * ncb, w0, w1, tb + m * tstride);
      }
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t n0 = r0 + 16 * t;
        const LutTile tile{a.idx + n0 * a.Wd, a.Wd, a.Wd, tb, tstride, imin(16, r1 - n0), nullptr,
                           a.bias ? a.bias + n0 : nullptr, a.y + m0 * a.N + n0, a.N};
        lut_tile_rows(tile, mc);
      }
    }
  }
}

#else
void codebook_linear(const CodebookLinearArgs& a) {
  if (a.M == 0 || a.N == 0) return;
  typedef Vec<SK_VW> V;
  typedef typename V::type vw;
  const int64_t f = a.field, per = 32 / f, emask = (int64_t{1} << a.bits) - 1, K = a.K, Kv = K - K % SK_VW;
#pragma omp parallel num_threads(a.nthreads)
  {
    std::vector<float> w(static_cast<std::size_t>(K) + SK_VW);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < a.N; ++n) {
      const float* cb = a.codebook + (n / a.group_size) * (emask + 1);
      const uint32_t* row = a.idx + n * a.Wd;
      for (int64_t k = 0; k < K; ++k) w[k] = cb[(row[k / per] >> (f * (k % per))) & emask];
      for (int64_t m = 0; m < a.M; ++m) {
        const float* x = a.x + m * K;
        vw acc = vw{};
        for (int64_t k = 0; k < Kv; k += SK_VW) acc += V::load(x + k) * V::load(w.data() + k);
        float sum = V::sum(acc);
        for (int64_t k = Kv; k < K; ++k) sum += x[k] * w[k];
        a.y[m * a.N + n] = sum + (a.bias ? a.bias[n] : 0.f);
      }
    }
  }
}
#endif
