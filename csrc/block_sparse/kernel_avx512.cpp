// The block-sparse kernels for the avx512 instruction set (see common/instantiate.h).
#include "block_sparse/args.h"
#define SK_KERNEL_HEADER "block_sparse/kernel.h"
#define SK_ISA_AVX512
#include "common/instantiate.h"
