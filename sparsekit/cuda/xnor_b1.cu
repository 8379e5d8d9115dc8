// XNOR GEMM on the 1-bit tensor-core path (sm_80 and later), compiled at run time through
// NVRTC; an alternative to xnor.cu's popcount kernel, chosen per device by measuring both
// (sparsekit/binary/cuda.py). Inline PTX wmma m8n8k128 b1: the load/store instructions lay the
// fragments out, so no lane mapping is assumed here.
//
// The tensor cores count popc(a AND b) (the .xor variant is not available on every
// architecture); with the row popcounts pa, pb of the masked bits,
//   popc(a ^ b) = pa + pb - 2 popc(a & b),  out = K - 2 popc(a ^ b).
// A block of 4 warps computes a 16 x 16 output tile, each warp an 8 x 8 quarter; slices of
// KS words of its 16 rows of a and b go through shared memory, masked (bits past K, rows past
// M or N read as zero) and counted on the way. Shared memory holds a slice step-major,
// [step][row][2 words], so every fragment starts 256-bit aligned with rows 128 bits apart.

#define BT 16  // output rows / columns per block
#define KS 8   // 64-bit words per slice: 4 m8n8k128 steps

__device__ __forceinline__ void mma_b1_and(int (&c)[2], const unsigned long long* a, const unsigned long long* b,
                                           unsigned ldm_bits) {
  unsigned ra, rb;
  asm volatile("wmma.load.a.sync.aligned.row.m8n8k128.b1 {%0}, [%1], %2;" : "=r"(ra) : "l"(a), "r"(ldm_bits));
  asm volatile("wmma.load.b.sync.aligned.col.m8n8k128.b1 {%0}, [%1], %2;" : "=r"(rb) : "l"(b), "r"(ldm_bits));
  asm volatile(
      "wmma.mma.and.popc.sync.aligned.row.col.m8n8k128.s32.b1.b1.s32 {%0, %1}, {%2}, {%3}, {%0, %1};"
      : "+r"(c[0]), "+r"(c[1])
      : "r"(ra), "r"(rb));
}

extern "C" __global__ void xnor_gemm_b1_kernel(const unsigned long long* __restrict__ a,
                                               const unsigned long long* __restrict__ b, int* __restrict__ out,
                                               long long M, long long N, long long W, long long K,
                                               long long last_bits) {
  __shared__ __align__(128) unsigned long long As[KS / 2][BT][2];
  __shared__ __align__(128) unsigned long long Bs[KS / 2][BT][2];
  __shared__ __align__(128) int Cs[4][8 * 8];
  __shared__ int pa[BT], pb[BT];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const long long m0 = (long long)blockIdx.y * BT, n0 = (long long)blockIdx.x * BT;
  const unsigned long long last_mask = last_bits >= 64 ? ~0ull : ((1ull << last_bits) - 1ull);
  if (tid < BT) {
    pa[tid] = 0;
    pb[tid] = 0;
  }
  int c[2] = {0, 0};
  const int wr = warp / 2, wc = warp % 2;  // this warp's 8 x 8 quarter
  for (long long w0 = 0; w0 < W; w0 += KS) {
    __syncthreads();  // the previous slice is consumed (and the counters are zeroed)
    // 128 threads load 2 x 16 rows x 8 words
    {
      const int r = tid / KS, k = tid % KS;  // tid < 128: rows 0..15 of a, then of b (two passes)
      for (int pass = 0; pass < 2; ++pass) {
        const long long row = (pass == 0 ? m0 : n0) + r, rows = pass == 0 ? M : N, w = w0 + k;
        unsigned long long v = 0;
        if (row < rows && w < W) {
          v = (pass == 0 ? a : b)[row * W + w];
          if (w == W - 1) v &= last_mask;
        }
        (pass == 0 ? As : Bs)[k / 2][r][k % 2] = v;
        if (v) atomicAdd(pass == 0 ? &pa[r] : &pb[r], __popcll(v));
      }
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < KS / 2; ++s)  // 128 bits per step
      mma_b1_and(c, &As[s][wr * 8][0], &Bs[s][wc * 8][0], 128);
  }
  asm volatile("wmma.store.d.sync.aligned.row.m8n8k128.s32 [%0], {%1, %2}, %3;" ::"l"(Cs[warp]), "r"(c[0]),
               "r"(c[1]), "r"(8)
               : "memory");
  __syncthreads();
  for (int i = lane; i < 64; i += 32) {
    const int r = wr * 8 + i / 8, q = wc * 8 + i % 8;
    const long long m = m0 + r, n = n0 + q;
    if (m < M && n < N) out[m * N + n] = (int)(K - 2 * (pa[r] + pb[q] - 2 * Cs[warp][i]));
  }
}
