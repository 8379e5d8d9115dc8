// The binary kernels for the avx512 instruction set (see common/instantiate.h).
#include "binary/args.h"
#define SK_KERNEL_HEADER "binary/kernel.h"
#define SK_ISA_AVX512
#include "common/instantiate.h"
