// The codebook kernels for the avx512 instruction set (see common/instantiate.h).
#include "codebook/args.h"
#define SK_KERNEL_HEADER "codebook/kernel.h"
#define SK_ISA_AVX512
#include "common/instantiate.h"
