// The codebook kernels for the portable instruction set (see common/instantiate.h).
#include "codebook/args.h"
#define SK_KERNEL_HEADER "codebook/kernel.h"
#define SK_ISA_PORTABLE
#include "common/instantiate.h"
