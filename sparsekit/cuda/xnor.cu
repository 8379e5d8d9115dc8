// XNOR-popcount GEMM for CUDA, compiled at run time through NVRTC (sparsekit/_nvrtc.py)
// and compile-checked with nvcc for sm_80 / sm_90 in CI.
//
// out[m, n] = K - 2 * popcount(a[m] ^ b[n]) over W 64-bit words of packed signs (bit 1 =
// +1; only the low last_bits bits of each row's last word count: padding is masked off). One 16 x 16 thread block computes
// a 16 x 16 output tile; 16-word slices of its 16 rows of a and b go through shared memory.

#define TILE 16

extern "C" __global__ void xnor_gemm_kernel(const unsigned long long* __restrict__ a,
                                            const unsigned long long* __restrict__ b, int* __restrict__ out,
                                            long long M, long long N, long long W, long long K,
                                            long long last_bits) {
  __shared__ unsigned long long As[TILE][TILE + 1];
  __shared__ unsigned long long Bs[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long m_load = (long long)blockIdx.y * TILE + ty;  // row of a this thread loads
  const long long n_load = (long long)blockIdx.x * TILE + ty;  // row of b this thread loads
  const long long m = (long long)blockIdx.y * TILE + ty;       // output this thread computes
  const long long n = (long long)blockIdx.x * TILE + tx;
  const unsigned long long last_mask = last_bits >= 64 ? ~0ull : ((1ull << last_bits) - 1ull);
  long long acc = 0;
  for (long long w0 = 0; w0 < W; w0 += TILE) {
    const long long w = w0 + tx;
    As[ty][tx] = (m_load < M && w < W) ? a[m_load * W + w] : 0ull;
    Bs[ty][tx] = (n_load < N && w < W) ? b[n_load * W + w] : 0ull;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TILE; ++k) {
      unsigned long long x = As[ty][k] ^ Bs[tx][k];
      if (w0 + k == W - 1) x &= last_mask;
      acc += __popcll(x);
    }
    __syncthreads();
  }
  if (m < M && n < N) out[m * N + n] = (int)(K - 2 * acc);
}
