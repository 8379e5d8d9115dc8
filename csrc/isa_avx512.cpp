// Kernels compiled for the avx512 instruction set; isa.cpp selects them at run time
// only on a CPU that reports avx512 support. No -m flags are passed to the build:
// the target pragma below applies to the kernel code after it and nothing else.
#include "isa_prelude.h"

namespace sk {
namespace avx512 {

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("arch=skylake-avx512")  // AVX-512 F/BW/VL/DQ + AVX2/FMA
#define SK_VW 16
#define SK_NR 12
#define SK_MR 2
#include "block_sparse_impl.h"
#include "xnor_impl.h"
#include "codebook_impl.h"
#include "dwsep_impl.h"
#undef SK_VW
#undef SK_NR
#undef SK_MR
#pragma GCC pop_options
#else
void bsr_linear(const BsrLinearArgs&) {}  // never selected off x86
void xnor_gemm(const XnorGemmArgs&) {}
void pack_signs(const PackSignsArgs&) {}
void sign_linear(const SignLinearArgs&) {}
void conv_im2col(const ConvIm2colArgs&) {}
void codebook_linear(const CodebookLinearArgs&) {}
void codebook_linear_q8(const CodebookQ8Args&) {}
void dwsep_conv2d(const DwsepArgs&) {}
#endif

}  // namespace avx512
}  // namespace sk
