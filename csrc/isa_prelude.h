// Headers every per-ISA kernel file includes *before* its target pragma, so that
// nothing declared here is compiled for a particular instruction set.
#pragma once
#include <cstdint>
#include <cstddef>
#include <vector>

#include "kernel_args.h"

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num() { return 0; }
#endif
