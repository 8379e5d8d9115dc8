// The dwsep kernels for the portable instruction set (see common/instantiate.h).
#include "dwsep/args.h"
#define SK_KERNEL_HEADER "dwsep/kernel.h"
#define SK_ISA_PORTABLE
#include "common/instantiate.h"
