// One format's kernel header compiled for one instruction set. Each <format>/kernel_<isa>.cpp is
//   #include "<format>/args.h"                 (outside any target pragma)
//   #define SK_KERNEL_HEADER "<format>/kernel.h"
//   #define SK_ISA_AVX512                        (or SK_ISA_AVX2, SK_ISA_PORTABLE)
//   #include "common/instantiate.h"
// which puts the header's kernels into namespace sk::<isa>, compiled with that ISA's target
// pragma and vector width. No -m flags are passed to the build: the pragma applies to the kernel
// code and nothing else, and common/isa.cpp selects an ISA only on a CPU that reports it.
// (Off x86 the wider ISAs compile as plain vector code; they are never selected there.)
#include "common/kernel_prelude.h"

#if defined(SK_ISA_PORTABLE)  // baseline: SSE2 on x86-64, NEON on aarch64, scalar elsewhere
#define SK_ISA_NS portable
#define SK_VW 4
#define SK_NR 6
#define SK_MR 2
#elif defined(SK_ISA_AVX2)  // AVX2 + FMA, Haswell tuning (256-bit loads not split)
#define SK_ISA_NS avx2
#define SK_VW 8
#define SK_NR 6
#define SK_MR 2
#elif defined(SK_ISA_AVX512)  // AVX-512 F/BW/VL/DQ + AVX2/FMA
#define SK_ISA_NS avx512
#define SK_VW 16
#define SK_NR 12
#define SK_MR 2
#else
#error "define SK_ISA_PORTABLE, SK_ISA_AVX2 or SK_ISA_AVX512 before including common/instantiate.h"
#endif

#if defined(__x86_64__) || defined(__i386__)
#if defined(SK_ISA_AVX2)
#pragma GCC push_options
#pragma GCC target("arch=haswell")
#elif defined(SK_ISA_AVX512)
#pragma GCC push_options
#pragma GCC target("arch=skylake-avx512")
#endif
#endif

namespace sk {
namespace SK_ISA_NS {
#include SK_KERNEL_HEADER
}  // namespace SK_ISA_NS
}  // namespace sk

#if (defined(__x86_64__) || defined(__i386__)) && (defined(SK_ISA_AVX2) || defined(SK_ISA_AVX512))
#pragma GCC pop_options
#endif
