// The codebook kernels for the avx2 instruction set (see common/instantiate.h).
#include "codebook/args.h"
#define SK_KERNEL_HEADER "codebook/kernel.h"
#define SK_ISA_AVX2
#include "common/instantiate.h"
