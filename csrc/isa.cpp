#include "isa.h"

#include <cstdlib>

#include "common.h"
#include <new>
#include <stdexcept>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sk {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         cpu_has_avx2();
#else
  return false;
#endif
}

bool cpu_has_avx512vp() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return cpu_has_avx512() && __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

// AMX needs the CPU (AMX-TILE, AMX-INT8; AVX512-VBMI and VNNI for the expansion and the small-M
// codebook path), the OS (XCR0 tile state bits) and, on Linux, a per-process grant of the tile
// data state, requested once here.
bool cpu_has_amx() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool ok = [] {
    if (!cpu_has_avx512vp() || !__builtin_cpu_supports("avx512vbmi") || !__builtin_cpu_supports("avx512vnni"))
      return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1)) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

bool cpu_has_vnni_vbmi() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  }();
  return ok;
#else
  return false;
#endif
}

// avx512vp level: the codebook int8 option in registers (VPDPBUSD) where the CPU has VNNI and
// VBMI (Ice Lake, Zen 4), else the generic integer path
void avx512vp_codebook_linear_q8(const CodebookQ8Args& a) {
  if (cpu_has_vnni_vbmi())
    amx::codebook_linear_q8_vnni(a);
  else
    avx512::codebook_linear_q8(a);
}

const Isa kAllIsas[] = {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512vp, Isa::amx};

Isa initial_isa() {
  const char* env = std::getenv("SPARSEKIT_CPU_ISA");
  Isa best = best_supported_isa();
  if (env == nullptr || env[0] == '\0') return best;
  std::string want(env);
  for (Isa isa : kAllIsas) {
    if (want == isa_name(isa)) {
      if (static_cast<int>(isa) > static_cast<int>(best))
        throw std::invalid_argument("SPARSEKIT_CPU_ISA=" + want + " but this CPU supports at most " +
                                    isa_name(best));
      return isa;
    }
  }
  throw std::invalid_argument("SPARSEKIT_CPU_ISA must be one of amx, avx512vp, avx512, avx2, portable; got '" +
                              want + "'");
}

Isa g_isa = Isa::portable;
bool g_isa_ready = false;

}  // namespace

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::amx: return "amx";
    case Isa::avx512vp: return "avx512vp";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

Isa best_supported_isa() {
  if (cpu_has_amx()) return Isa::amx;
  if (cpu_has_avx512vp()) return Isa::avx512vp;
  if (cpu_has_avx512()) return Isa::avx512;
  if (cpu_has_avx2()) return Isa::avx2;
  return Isa::portable;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = static_cast<int>(best_supported_isa()); i >= 0; --i) out.push_back(isa_name(static_cast<Isa>(i)));
  return out;
}

Isa current_isa() {
  if (!g_isa_ready) {
    g_isa = initial_isa();
    g_isa_ready = true;
  }
  return g_isa;
}

void set_isa(const std::string& name) {
  Isa best = best_supported_isa();
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) {
      if (static_cast<int>(isa) > static_cast<int>(best))
        throw std::invalid_argument("isa '" + name + "' is not supported by this CPU (best: " + isa_name(best) +
                                    ")");
      g_isa = isa;
      g_isa_ready = true;
      return;
    }
  }
  throw std::invalid_argument("isa must be one of amx, avx512vp, avx512, avx2, portable; got '" + name + "'");
}

const Kernels& kernels(Isa isa) {
  static const Kernels table[] = {  // rows in Isa order: portable, avx2, avx512, avx512vp
      {portable::bsr_linear, portable::xnor_gemm, portable::pack_signs, portable::sign_linear, portable::conv_im2col,
       portable::codebook_linear, portable::codebook_linear_q8, portable::dwsep_conv2d},
      {avx2::bsr_linear, avx2::xnor_gemm, avx2::pack_signs, avx2::sign_linear, avx2::conv_im2col,
       avx2::codebook_linear, avx2::codebook_linear_q8, avx2::dwsep_conv2d},
      {avx512::bsr_linear, avx512::xnor_gemm, avx512::pack_signs, avx512::sign_linear, avx512::conv_im2col,
       avx512::codebook_linear, avx512::codebook_linear_q8, avx512::dwsep_conv2d},
      // VPOPCNTDQ changes the XNOR GEMM (and VNNI + VBMI, where present, the codebook int8 option)
      {avx512::bsr_linear, avx512vp::xnor_gemm, avx512::pack_signs, avx512::sign_linear, avx512::conv_im2col,
       avx512::codebook_linear, avx512vp_codebook_linear_q8, avx512::dwsep_conv2d},
      // AMX changes the XNOR GEMM (from 96 rows on) and the codebook matmul's int8 option
      {avx512::bsr_linear, amx::xnor_gemm, avx512::pack_signs, avx512::sign_linear, avx512::conv_im2col,
       avx512::codebook_linear, amx::codebook_linear_q8, avx512::dwsep_conv2d},
  };
  static_assert(sizeof(table) / sizeof(table[0]) == static_cast<int>(Isa::amx) + 1, "one row per Isa");
  return table[static_cast<int>(isa)];
}

void* thread_scratch(std::size_t bytes, int slot) {
  struct Buffer {
    void* p = nullptr;
    std::size_t n = 0;
    ~Buffer() { std::free(p); }
  };
  static thread_local Buffer bufs[8];
  if (slot < 0 || slot >= 8) throw std::invalid_argument("thread_scratch: slot must be in [0, 8)");
  Buffer& b = bufs[slot];
  if (b.n < bytes) {
    scratch_bytes(static_cast<int64_t>(bytes), 1, "a kernel's scratch buffer");  // no more than the machine has
    std::free(b.p);
    b.n = 0;
    b.p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (b.p == nullptr) throw std::bad_alloc();
    b.n = bytes;
  }
  return b.p;
}

}  // namespace sk
