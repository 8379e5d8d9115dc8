// The dwsep kernels for the avx2 instruction set (see common/instantiate.h).
#include "dwsep/args.h"
#define SK_KERNEL_HEADER "dwsep/kernel.h"
#define SK_ISA_AVX2
#include "common/instantiate.h"
