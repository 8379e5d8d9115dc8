// Run-time choice of the CPU instruction set, and the per-ISA table each op picks its kernel from.
#pragma once
#include <string>
#include <vector>

namespace sk {

// avx512vp: AVX-512 with VPOPCNTDQ (Ice Lake and later); it runs the avx512 kernels except
// where a kernel has a VPOPCNTDQ variant. amx: avx512vp plus the AMX-INT8 tile unit (Sapphire
// Rapids and later).
enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2, avx512vp = 3, amx = 4 };

std::string isa_name(Isa isa);
Isa best_supported_isa();
std::vector<std::string> supported_isas();
Isa current_isa();                      // SPARSEKIT_CPU_ISA, else the best this CPU runs
void set_isa(const std::string& name);  // ValueError for an unknown or unsupported name
bool cpu_has_vnni_vbmi();               // AVX512-VNNI and VBMI (the codebook int8 register path)

// One op's kernel per instruction set: portable, avx2 and avx512 are the three compilations of
// the format's kernel header (<format>/kernel_<isa>.cpp); avx512vp and amx default to the level
// below them, so a format lists only the kernels it has for those.
template <typename Fn>
struct IsaKernels {
  Fn portable, avx2, avx512, avx512vp = nullptr, amx = nullptr;

  Fn get(Isa isa) const {
    switch (isa) {
      case Isa::amx: return amx ? amx : avx512vp ? avx512vp : avx512;
      case Isa::avx512vp: return avx512vp ? avx512vp : avx512;
      case Isa::avx512: return avx512;
      case Isa::avx2: return avx2;
      default: return portable;
    }
  }
  Fn get() const { return get(current_isa()); }
};

}  // namespace sk
