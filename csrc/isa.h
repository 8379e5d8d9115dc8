// Run-time choice of the CPU instruction set.
#pragma once
#include <string>
#include <vector>
#include "kernel_args.h"

namespace sk {

// avx512vp: AVX-512 with VPOPCNTDQ (Ice Lake and later); it runs the avx512 kernels
// except where a kernel has a VPOPCNTDQ variant. amx: avx512vp plus the AMX-INT8 tile unit
// (Sapphire Rapids and later), used by the XNOR GEMM.
enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2, avx512vp = 3, amx = 4 };

std::string isa_name(Isa isa);
Isa best_supported_isa();
std::vector<std::string> supported_isas();
Isa current_isa();
void set_isa(const std::string& name);  // throws std::invalid_argument

// Per-ISA kernel entry points, one definition in each csrc/isa_<name>/ translation unit.
#define SK_DECLARE_KERNELS(ns) \
  namespace ns {               \
  void bsr_linear(const BsrLinearArgs& a); \
  void xnor_gemm(const XnorGemmArgs& a);   \
  void pack_signs(const PackSignsArgs& a); \
  void sign_linear(const SignLinearArgs& a); \
  void conv_im2col(const ConvIm2colArgs& a); \
  void codebook_linear(const CodebookLinearArgs& a); \
  void codebook_linear_q8(const CodebookQ8Args& a); \
  void dwsep_conv2d(const DwsepArgs& a); \
  }
SK_DECLARE_KERNELS(portable)
SK_DECLARE_KERNELS(avx2)
SK_DECLARE_KERNELS(avx512)
#undef SK_DECLARE_KERNELS
namespace avx512vp {
void xnor_gemm(const XnorGemmArgs& a);
}
namespace amx {
void xnor_gemm(const XnorGemmArgs& a);
void codebook_linear_q8(const CodebookQ8Args& a);
void codebook_linear_q8_vnni(const CodebookQ8Args& a);  // needs AVX512-VNNI and VBMI, not AMX
bool takes(int64_t M, int64_t N, bool conv_out, int nthreads);  // whether xnor_gemm runs on the tiles
}

// The kernels each ISA runs: one row per ISA in isa.cpp, the one place a new op is added.
struct Kernels {
  void (*bsr_linear)(const BsrLinearArgs&);
  void (*xnor_gemm)(const XnorGemmArgs&);
  void (*pack_signs)(const PackSignsArgs&);
  void (*sign_linear)(const SignLinearArgs&);
  void (*conv_im2col)(const ConvIm2colArgs&);
  void (*codebook_linear)(const CodebookLinearArgs&);
  void (*codebook_linear_q8)(const CodebookQ8Args&);
  void (*dwsep_conv2d)(const DwsepArgs&);
};
const Kernels& kernels(Isa isa);

}  // namespace sk
