// The binary kernels for the portable instruction set (see common/instantiate.h).
#include "binary/args.h"
#define SK_KERNEL_HEADER "binary/kernel.h"
#define SK_ISA_PORTABLE
#include "common/instantiate.h"
