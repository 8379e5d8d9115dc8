// What every per-ISA kernel file has before its target pragma (see common/instantiate.h), so
// that nothing declared here is compiled for a particular instruction set.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sk {
// Per-thread scratch for kernels: `slot` (0..7) of the calling thread, grown as needed, kept,
// 64-byte aligned; throws std::bad_alloc. The one scratch allocator (common/scratch.cpp): kernel
// files use no std:: templates, whose instantiations under one ISA's target could be linked into
// another's calls.
void* thread_scratch(std::size_t bytes, int slot);
}  // namespace sk

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num() { return 0; }
#endif
